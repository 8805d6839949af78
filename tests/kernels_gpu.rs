//! The same launch layer on a real GPU (CudaLauncher): a few kernels against the CPU reference. On a machine
//! without a usable GPU this prints why it did not run and passes; the simulator tests (kernels_sim.rs) are
//! the ones that run everywhere.

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use half::bf16;
use rlhf::kernels::cuda::CudaLauncher;
use rlhf::kernels::launch::{self as kl, DType};
use rlhf::ops;
use rlhf::util::rng::Rng;
use std::sync::Arc;

fn dptr<T>(s: &CudaSlice<T>, st: &Arc<CudaStream>) -> u64 {
    let (p, _sync) = s.device_ptr(st);
    p
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let (mut n, mut d) = (0.0, 0.0);
    for (g, w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        n += (g - w) * (g - w);
        d += w * w;
    }
    (n / d.max(1e-300)).sqrt()
}

#[test]
fn gpu_kernels_match_reference() {
    let l = match CudaLauncher::new(0) {
        Ok(l) => l,
        Err(e) => {
            println!("GPU kernel check did not run here: {e}");
            return;
        }
    };
    println!("GPU kernel check on sm_{}", l.sm);
    let st = l.stream().clone();
    let mut rng = Rng::new(7);

    // GELU f32, ragged n
    let n = 100_003;
    let x: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let dx = st.clone_htod(&x).unwrap();
    let dout = st.alloc_zeros::<f32>(n).unwrap();
    // SAFETY: every pointer is a live allocation on this launcher's stream of the length the shapes passed require.
    unsafe { kl::gelu_forward(&l, DType::F32, dptr(&dout, &st), dptr(&dx, &st), n) }.unwrap();
    let got: Vec<f64> = st.clone_dtoh(&dout).unwrap().iter().map(|&v| v as f64).collect();
    let mut want = vec![0.0; n];
    ops::gelu::forward::<f64>(&mut want, &x.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let e = rel_err(&got, &want);
    assert!(e < 1e-5, "gelu_forward_f32 on GPU: {e:e}");

    // layernorm f32
    let (rows, c) = (1000, 768);
    let xi: Vec<f32> = (0..rows * c).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..c).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..c).map(|_| rng.normal() as f32).collect();
    let (dxi, dw, db) = (st.clone_htod(&xi).unwrap(), st.clone_htod(&w).unwrap(), st.clone_htod(&b).unwrap());
    let (o, m, r) = (
        st.alloc_zeros::<f32>(rows * c).unwrap(),
        st.alloc_zeros::<f32>(rows).unwrap(),
        st.alloc_zeros::<f32>(rows).unwrap(),
    );
    // SAFETY: every pointer is a live allocation on this launcher's stream of the length the shapes passed require.
    unsafe {
        kl::layernorm_forward(
            &l,
            DType::F32,
            dptr(&o, &st),
            dptr(&m, &st),
            dptr(&r, &st),
            dptr(&dxi, &st),
            dptr(&dw, &st),
            dptr(&db, &st),
            rows,
            c,
        )
    }
    .unwrap();
    let got: Vec<f64> = st.clone_dtoh(&o).unwrap().iter().map(|&v| v as f64).collect();
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    let (mut wo, mut wm, mut wr) = (vec![0.0; rows * c], vec![0.0; rows], vec![0.0; rows]);
    ops::layernorm::forward::<f64>(&mut wo, &mut wm, &mut wr, &f(&xi), &f(&w), &f(&b), c);
    let e = rel_err(&got, &wo);
    assert!(e < 1e-5, "layernorm_forward_f32 on GPU: {e:e}");

    // attention forward, bf16 head 64 (tensor cores) vs the reference on the same bf16 inputs
    let (bb, t, c, nh) = (2usize, 200usize, 128usize, 2usize);
    let qkv: Vec<bf16> = (0..bb * t * 3 * c).map(|_| bf16::from_f64(rng.normal())).collect();
    let bits: Vec<u16> = qkv.iter().map(|v| v.to_bits()).collect();
    let dq = st.clone_htod(&bits).unwrap();
    let pos0 = vec![0u32; bb];
    let dp = st.clone_htod(&pos0).unwrap();
    let out = st.alloc_zeros::<u16>(bb * t * c).unwrap();
    let lse = st.alloc_zeros::<f32>(bb * nh * t).unwrap();
    // SAFETY: every pointer is a live allocation on this launcher's stream of the length the shapes passed require.
    unsafe {
        kl::attention_forward(
            &l,
            DType::BF16,
            dptr(&out, &st),
            dptr(&lse, &st),
            dptr(&dq, &st),
            dptr(&dq, &st),
            dptr(&dp, &st),
            bb,
            t,
            t,
            c,
            nh,
            nh,
        )
    }
    .unwrap();
    let got: Vec<f64> = st.clone_dtoh(&out).unwrap().iter().map(|&u| bf16::from_bits(u).to_f64()).collect();
    let q64: Vec<f64> = qkv.iter().map(|v| v.to_f64()).collect();
    let (mut wo, mut wl) = (vec![0.0; bb * t * c], vec![0.0; bb * nh * t]);
    ops::attention::forward::<f64>(&mut wo, &mut wl, &q64, &q64, &pos0, bb, t, t, c, nh, nh);
    let e = rel_err(&got, &wo);
    assert!(e < 6e-3, "attention_forward_mma_bf16 on GPU: {e:e}");
    l.synchronize().unwrap();
}
