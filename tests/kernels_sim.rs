//! Every CUDA kernel run in the CPU simulator through the engine's launch layer (`rlhf::kernels::launch`),
//! on small random shapes including ragged ones (not multiples of the block or warp size), against the CPU
//! reference ops (`rlhf::ops`) evaluated in f64 on the same (for bf16: bf16-rounded) inputs.
//!
//! Tolerances (relative L2 error ||got - want|| / ||want||):
//! - f32: 1e-5. The kernels compute in f32 like the reference contract; differences come from summation
//!   order and libm vs. CUDA math (a few ulps, ~1e-7 relative per element), amplified at most modestly by the
//!   reductions over <= a few hundred terms tested here.
//! - bf16 storage: 6e-3. One rounding of each output to bf16 (8 significant bits, round to nearest even)
//!   contributes <= 2^-8 = 3.9e-3 relative per element (half that on average); ops that read-modify-write a bf16 output (+=) or
//!   whose bf16 input/intermediate rounding feeds a cancellation (layernorm backward) can lose a little more.
//!
//! Outputs are NaN-poisoned before the kernel runs so an element the kernel forgets to write fails the test;
//! every buffer sits between guard bytes (`SimBuf`), so an element written before or past it fails it too.
//!
//! Shapes: for every kernel, some shape runs each of its tiled loops (blocks over the grid, lanes or threads
//! striding over a row, key and query tiles) at least twice and ends on a ragged last tile, with the tile sizes
//! taken from the launch geometry (`launch::geometry`) and the 16-byte pack (`DType::pack`).

mod common;

use common::{randn, DBuf};
use half::bf16;
use rlhf::kernels::launch::geometry::{
    CE_BLOCK, COLSUM_COLS, COLSUM_ROWS, DEC_WARPS, ENC_WTE_MAX_GRID, ENTROPY_BLOCK, EW_BLOCK, MULTI_CHUNK,
    SAMPLE_BLOCK, SUMSQ_BLOCK, WA_K, WB_T,
};
use rlhf::kernels::launch::{self as kl, DType};
use rlhf::kernels::sim::{self, SimBuf, SimLauncher};
use rlhf::kernels::{Arg, LaunchConfig, Launcher};
use rlhf::ops;
use rlhf::ops::sample::Sampling;
use rlhf::util::rng::Rng;

const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 6e-3;

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => TOL_F32,
        DType::BF16 => TOL_BF16,
    }
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let mut num = 0.0;
    let mut den = 0.0;
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        num += (g - w) * (g - w);
        den += w * w;
    }
    (num / den.max(1e-300)).sqrt()
}

fn check(what: &str, dt: DType, got: &[f64], want: &[f64]) {
    let e = rel_err(got, want);
    assert!(e <= tol(dt), "{what} ({dt:?}): relative error {e:.3e} > {:.1e}", tol(dt));
}

fn f32buf(x: &[f64]) -> SimBuf<f32> {
    SimBuf::from_slice(&x.iter().map(|&v| v as f32).collect::<Vec<_>>())
}
fn f64s(b: &SimBuf<f32>) -> Vec<f64> {
    b.as_slice().iter().map(|&v| v as f64).collect()
}
fn scratch(bytes: usize) -> SimBuf<u8> {
    SimBuf::poisoned(bytes, 0xff)
}

const DTYPES: [DType; 2] = [DType::F32, DType::BF16];

/// Elements per 16-byte pack of bf16, a multiple of f32's: row lengths that are multiples of it take the
/// packed path in both dtypes.
const PACK: usize = 8;
/// Threads per warp.
const WARP: usize = 32;

fn g(x: u32) -> usize {
    x as usize
}

fn launcher() -> SimLauncher {
    SimLauncher::new()
}

// ------------------------------------------------------------------------------------------------ inventory

#[test]
fn inventory_lists_simulated_and_gpu_only_kernels() {
    let names = sim::kernel_names();
    let engine: Vec<&String> = names.iter().filter(|n| !n.starts_with("planted_")).collect();
    println!("kernel files in the simulator: {:?}", rlhf::kernels::SIM_FILES);
    println!(
        "kernels in the simulator ({}): {}",
        engine.len(),
        engine.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    );
    if rlhf::kernels::GPU_ONLY_KERNELS.is_empty() {
        println!("GPU-only kernels: none");
    }
    for (file, ks) in rlhf::kernels::GPU_ONLY_KERNELS {
        println!("GPU-only (not run here): {file}.cu: {}", ks.join(" "));
    }
    match rlhf::kernels::PTX_UNAVAILABLE_REASON {
        None => println!(
            "PTX embedded for: {:?}",
            rlhf::kernels::PTX_MODULES.iter().map(|(s, a, _)| format!("{s}@sm_{a}")).collect::<Vec<_>>()
        ),
        Some(why) => println!("no PTX in this build: {why}"),
    }
    for (file, arch, k, regs, st, ld) in rlhf::kernels::ptxas_summary().iter().filter(|r| r.1 == "sm_90") {
        println!("ptxas {file} {arch} {k}: {regs} registers, spill stores {st} B, spill loads {ld} B");
    }
    for op in [
        "gelu_forward",
        "gelu_backward",
        "swiglu_forward",
        "swiglu_backward",
        "add",
        "accumulate",
        "scale",
        "bias_add",
        "bias_backward_partial",
        "colsum_finalize",
        "layernorm_forward",
        "residual_layernorm_forward",
        "layernorm_backward_dinp",
        "layernorm_backward_partial",
        "rmsnorm_forward",
        "rmsnorm_backward_dinp",
        "rmsnorm_backward_partial",
        "rope_forward",
        "rope_backward",
        "encoder_forward",
        "encoder_backward_wte",
        "encoder_backward_wpe",
        "crossentropy",
        "adamw_multi",
        "sum_squares_multi_partial",
        "copy_rows",
        "sample",
        "attention_decode_hs1",
        "attention_decode_hs2",
        "attention_decode_hs4",
        "attention_forward_hs1",
        "attention_forward_hs2",
        "attention_forward_hs4",
        "attention_backward_dq_hs2",
        "attention_backward_dkv_hs2",
    ] {
        for dt in DTYPES {
            let n = format!("{op}_{}", dt.suffix());
            assert!(sim::has_kernel(&n), "{n} is not in the simulator");
        }
    }
    assert!(sim::has_kernel("sum_squares_final"));
    assert!(sim::has_kernel("attention_forward_mma_bf16"));
    assert!(sim::has_kernel("attention_backward_dq_wmma_bf16"));
    assert!(sim::has_kernel("attention_backward_dkv_wmma_bf16"));
    assert!(!sim::has_kernel("no_such_kernel"));
    // The tensor-core attention kernels really issue bf16 tensor-core MMAs: the forward's mma.sync (8 + 8 per
    // 16 keys of a tile, the loops unrolled), the backward's WMMA.
    if let Some(rlhf::kernels::Image::Ptx { text: ptx, .. }) =
        rlhf::kernels::ptx_image(rlhf::kernels::PTX_MODULES, "attention", 90)
    {
        let body_of = |k: &str| {
            let start = ptx.find(&format!(".entry {k}(")).unwrap_or_else(|| panic!("{k} not in the attention PTX"));
            let body = &ptx[start + 1..];
            &body[..body.find(".entry ").unwrap_or(body.len())]
        };
        let n = body_of("attention_forward_mma_bf16")
            .matches("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32")
            .count();
        println!("attention_forward_mma_bf16 PTX (sm_90): {n} bf16 mma.sync instructions");
        assert!(n >= 64, "attention_forward_mma_bf16 PTX has too few bf16 mma.sync ({n})");
        for k in ["attention_backward_dq_wmma_bf16", "attention_backward_dkv_wmma_bf16"] {
            let body = body_of(k);
            let n = body.matches("wmma.mma.sync.aligned.row.col.m16n16k16.f32.bf16.bf16.f32").count()
                + body.matches("wmma.mma.sync.aligned.row.row.m16n16k16.f32.bf16.bf16.f32").count();
            println!("{k} PTX (sm_90): {n} bf16 wmma.mma.sync instructions");
            assert!(n >= 3, "{k} PTX has too few bf16 wmma.mma.sync ({n})");
        }
    } else {
        println!("no attention PTX in this build: tensor-core instruction check did not run");
    }
    // Every PTX module has its cubin (an ELF image) for the same architecture.
    for (stem, arch, _) in rlhf::kernels::PTX_MODULES {
        let cubin = rlhf::kernels::CUBIN_MODULES.iter().find(|(s, a, _)| s == stem && a == arch);
        assert!(cubin.is_some_and(|(_, _, b)| b.starts_with(b"\x7fELF")), "{stem} sm_{arch}: no cubin");
    }
    // Every PTX module must come from a kernel file the simulator also runs, or a declared GPU-only file.
    for (stem, _, ptx) in rlhf::kernels::PTX_MODULES {
        assert!(
            rlhf::kernels::SIM_FILES.contains(stem) || rlhf::kernels::GPU_ONLY_KERNELS.iter().any(|(f, _)| f == stem),
            "{stem}"
        );
        assert!(ptx.contains(".entry"), "{stem}: PTX without entry points");
    }
}

#[test]
fn launch_errors_are_reported_not_crashes() {
    let l = launcher();
    // SAFETY: no such kernel: nothing runs.
    let e = unsafe { l.launch("no_such_kernel", LaunchConfig::linear(1, 32), &[]) }.unwrap_err();
    assert!(e.to_string().contains("no simulated kernel"), "{e}");
    // SAFETY: the simulator refuses the block size before running anything.
    let e = unsafe {
        l.launch(
            "planted_scale2_ok",
            LaunchConfig { grid: [1, 1, 1], block: [2048, 1, 1], smem: 0 },
            &[Arg::Ptr(0), Arg::Ptr(0), Arg::I32(0)],
        )
    }
    .unwrap_err();
    assert!(e.to_string().contains("max 1024"), "{e}");
    // misaligned pointer into a packed kernel is refused by the launch layer
    let b = SimBuf::<f32>::zeros(16);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    let e = unsafe { kl::gelu_forward(&l, DType::F32, b.ptr_at(1), b.ptr(), 8) }.unwrap_err();
    assert!(e.to_string().contains("aligned"), "{e}");
}

// ------------------------------------------------------------------------------------------------ elementwise

#[test]
fn gelu_forward_backward() {
    let l = launcher();
    let mut rng = Rng::new(1);
    for dt in DTYPES {
        // the last: more than two blocks of EW_BLOCK threads (one pack each), a ragged last block and pack
        for n in [1usize, 7, 8, 9, 1000, 2 * g(EW_BLOCK) * PACK + 3] {
            let x = DBuf::new(dt, &randn(&mut rng, n, 2.0));
            let dy = DBuf::new(dt, &randn(&mut rng, n, 1.0));
            let out = DBuf::poisoned(dt, n);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::gelu_forward(&l, dt, out.ptr(), x.ptr(), n) }.unwrap();
            let mut want = vec![0.0; n];
            ops::gelu::forward::<f64>(&mut want, &x.get());
            check(&format!("gelu_forward n={n}"), dt, &out.get(), &want);

            let dx = DBuf::poisoned(dt, n);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::gelu_backward(&l, dt, dx.ptr(), x.ptr(), dy.ptr(), n) }.unwrap();
            ops::gelu::backward::<f64>(&mut want, &x.get(), &dy.get());
            check(&format!("gelu_backward n={n}"), dt, &dx.get(), &want);
        }
    }
}

#[test]
fn swiglu_forward_backward() {
    let l = launcher();
    let mut rng = Rng::new(5);
    for dt in DTYPES {
        // (rows, F): single elements (F = 1, 67) and 16-byte chunks (F = 4: f32 only; 120: both dtypes); the last
        // two run more than two blocks of EW_BLOCK threads and end on a ragged block.
        for (n, f) in [(3usize, 1usize), (5, 4), (9, 67), (37, 120)] {
            // gates of std 3 reach both tails of the sigmoid
            let x = DBuf::new(dt, &randn(&mut rng, n * 2 * f, 3.0));
            let dy = DBuf::new(dt, &randn(&mut rng, n * f, 1.0));
            let out = DBuf::poisoned(dt, n * f);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::swiglu_forward(&l, dt, out.ptr(), x.ptr(), n, f) }.unwrap();
            let mut want = vec![0.0; n * f];
            ops::swiglu::forward::<f64>(&mut want, &x.get(), f);
            check(&format!("swiglu_forward {n}x{f}"), dt, &out.get(), &want);

            let dx = DBuf::poisoned(dt, n * 2 * f);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::swiglu_backward(&l, dt, dx.ptr(), dy.ptr(), x.ptr(), n, f) }.unwrap();
            let mut want = vec![0.0; n * 2 * f];
            ops::swiglu::backward::<f64>(&mut want, &dy.get(), &x.get(), f);
            check(&format!("swiglu_backward {n}x{f}"), dt, &dx.get(), &want);
        }
    }
}

#[test]
fn residual_add_accumulate_scale() {
    let l = launcher();
    let mut rng = Rng::new(2);
    for dt in DTYPES {
        for n in [3usize, 16, 777, 2 * g(EW_BLOCK) * PACK + 3] {
            // a and b hold one element more than the kernels are given: the in-place kernels must leave it alone
            // (the guard bytes past a buffer would not show an update of element n: it keeps their NaN)
            let a = DBuf::new(dt, &randn(&mut rng, n + 1, 1.0));
            let b = DBuf::new(dt, &randn(&mut rng, n + 1, 1.0));
            let out = DBuf::poisoned(dt, n);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::add(&l, dt, out.ptr(), a.ptr(), b.ptr(), n) }.unwrap();
            let mut want = vec![0.0; n];
            ops::residual::add::<f64>(&mut want, &a.get()[..n], &b.get()[..n]);
            check("add", dt, &out.get(), &want);

            let mut want = a.get();
            ops::residual::accumulate::<f64>(&mut want[..n], &b.get()[..n]);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::accumulate(&l, dt, a.ptr(), b.ptr(), n) }.unwrap();
            check("accumulate", dt, &a.get(), &want);
            assert_eq!(a.get()[n], want[n], "accumulate n={n} wrote element n");

            let mut want = b.get();
            ops::residual::scale::<f64>(&mut want[..n], -0.37);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::scale(&l, dt, b.ptr(), -0.37, n) }.unwrap();
            check("scale", dt, &b.get(), &want);
            assert_eq!(b.get()[n], want[n], "scale n={n} wrote element n");
        }
    }
}

#[test]
fn casts_round_to_nearest_even() {
    let l = launcher();
    let mut rng = Rng::new(3);
    let mut x: Vec<f32> = randn(&mut rng, 1001, 3.0).iter().map(|&v| v as f32).collect();
    // exact ties: 1 + 2^-8 (tie, even -> 1), 1 + 3*2^-8 (tie, even -> 1 + 2^-6), a tiny subnormal, infinities
    x.extend([1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 1e-40, f32::INFINITY, f32::NEG_INFINITY, -0.0, 65504.0]);
    let n = x.len();
    let src = SimBuf::from_slice(&x);
    let dst = SimBuf::<bf16>::poisoned(n, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::cast_f32_to_bf16(&l, dst.ptr(), src.ptr(), n) }.unwrap();
    for (i, (&f, &h)) in x.iter().zip(dst.as_slice()).enumerate() {
        assert_eq!(h.to_bits(), bf16::from_f32(f).to_bits(), "element {i}: {f}");
    }
    assert_eq!(dst.as_slice()[1001].to_f32(), 1.0);
    assert_eq!(dst.as_slice()[1002].to_f32(), 1.0 + 4.0 / 256.0);
    let back = SimBuf::<f32>::poisoned(n, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::cast_bf16_to_f32(&l, back.ptr(), dst.ptr(), n) }.unwrap();
    for (&b, &h) in back.as_slice().iter().zip(dst.as_slice()) {
        assert_eq!(b.to_bits(), h.to_f32().to_bits());
    }
}

#[test]
fn bias_add_and_bias_backward() {
    let l = launcher();
    let mut rng = Rng::new(4);
    for dt in DTYPES {
        // (rows, columns): partial sums over two COLSUM_ROWS row chunks and two COLSUM_COLS column blocks, both
        // ragged; the finalizer and bias_add over more than one EW_BLOCK of columns
        let (rows, cols) = (g(COLSUM_ROWS) + 44, g(COLSUM_COLS) + 1);
        for (n, oc) in [(1usize, 5usize), (37, 67), (rows, cols), (rows, g(EW_BLOCK) + g(COLSUM_COLS) + 5)] {
            // one element more than the kernel is given, which it must leave alone (as in residual_add_...)
            let out = DBuf::new(dt, &randn(&mut rng, n * oc + 1, 1.0));
            let bias = DBuf::new(dt, &randn(&mut rng, oc, 1.0));
            let mut want = out.get();
            ops::linear::bias_add::<f64>(&mut want[..n * oc], &bias.get());
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::bias_add(&l, dt, out.ptr(), bias.ptr(), n, oc) }.unwrap();
            check("bias_add", dt, &out.get(), &want);
            assert_eq!(out.get()[n * oc], want[n * oc], "bias_add {n}x{oc} wrote element N*OC");

            let dout = DBuf::new(dt, &randn(&mut rng, n * oc, 1.0));
            let db = DBuf::new(dt, &randn(&mut rng, oc, 1.0));
            let mut want = db.get();
            ops::linear::bias_backward::<f64>(&mut want, &dout.get());
            let s = scratch(kl::bias_backward_scratch_bytes(n, oc));
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::bias_backward(&l, dt, db.ptr(), dout.ptr(), n, oc, s.ptr()) }.unwrap();
            check(&format!("bias_backward {n}x{oc}"), dt, &db.get(), &want);
        }
    }
}

// ------------------------------------------------------------------------------------------------ layernorm

fn layernorm_case(l: &dyn Launcher, dt: DType, n: usize, c: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let x = DBuf::new(dt, &randn(&mut rng, n * c, 1.5).iter().map(|v| v + 0.3).collect::<Vec<_>>());
    let w = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let b = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let out = DBuf::poisoned(dt, n * c);
    let mean = SimBuf::<f32>::poisoned(n, 0xff);
    let rstd = SimBuf::<f32>::poisoned(n, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::layernorm_forward(l, dt, out.ptr(), mean.ptr(), rstd.ptr(), x.ptr(), w.ptr(), b.ptr(), n, c) }
        .unwrap();
    let (mut wo, mut wm, mut wr) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    ops::layernorm::forward::<f64>(&mut wo, &mut wm, &mut wr, &x.get(), &w.get(), &b.get(), c);
    check(&format!("layernorm_forward {n}x{c} out"), dt, &out.get(), &wo);
    // statistics are f32 whatever the storage type
    check(&format!("layernorm_forward {n}x{c} mean"), DType::F32, &f64s(&mean), &wm);
    check(&format!("layernorm_forward {n}x{c} rstd"), DType::F32, &f64s(&rstd), &wr);

    let dout = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
    let dinp = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
    let dw = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let db = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let (mut wdi, mut wdw, mut wdb) = (dinp.get(), dw.get(), db.get());
    ops::layernorm::backward::<f64>(&mut wdi, &mut wdw, &mut wdb, &dout.get(), &x.get(), &w.get(), &wm, &wr, c);
    let s = scratch(kl::layernorm_backward_scratch_bytes(n, c));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::layernorm_backward(
            l,
            dt,
            dinp.ptr(),
            dw.ptr(),
            db.ptr(),
            dout.ptr(),
            x.ptr(),
            w.ptr(),
            mean.ptr(),
            rstd.ptr(),
            n,
            c,
            s.ptr(),
        )
    }
    .unwrap();
    check(&format!("layernorm_backward {n}x{c} dinp"), dt, &dinp.get(), &wdi);
    check(&format!("layernorm_backward {n}x{c} dw"), dt, &dw.get(), &wdw);
    check(&format!("layernorm_backward {n}x{c} db"), dt, &db.get(), &wdb);
    vec![out.get(), dinp.get(), dw.get(), db.get()]
}

/// A row length that takes the packed path in both dtypes and needs three passes of a warp's 32 lanes, the
/// last one ragged (f32: five passes of 32 x 4).
fn ln_packed() -> usize {
    2 * WARP * PACK + 3 * PACK
}

#[test]
fn layernorm_forward_backward() {
    let l = launcher();
    for dt in DTYPES {
        // a warp per row: rows of 3+ passes of 32 lanes in single elements (67) and in 16-byte packs (ln_packed)
        for (i, (n, c)) in [(1usize, 1usize), (5, 31), (37, 67), (260, 96), (9, ln_packed())].into_iter().enumerate() {
            layernorm_case(&l, dt, n, c, 10 + i as u64);
        }
    }
}

#[test]
fn residual_layernorm_fused_forward() {
    let l = launcher();
    let mut rng = Rng::new(15);
    for dt in DTYPES {
        for (n, c) in [(3usize, 31usize), (37, 67), (9, 768), (9, ln_packed())] {
            let a = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
            let b = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
            let w = DBuf::new(dt, &randn(&mut rng, c, 1.0));
            let bias = DBuf::new(dt, &randn(&mut rng, c, 1.0));
            let (res, out) = (DBuf::poisoned(dt, n * c), DBuf::poisoned(dt, n * c));
            let (mean, rstd) = (SimBuf::<f32>::poisoned(n, 0xff), SimBuf::<f32>::poisoned(n, 0xff));
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe {
                kl::residual_layernorm_forward(
                    &l,
                    dt,
                    res.ptr(),
                    out.ptr(),
                    mean.ptr(),
                    rstd.ptr(),
                    a.ptr(),
                    b.ptr(),
                    w.ptr(),
                    bias.ptr(),
                    n,
                    c,
                )
            }
            .unwrap();
            let mut want_res = vec![0.0; n * c];
            ops::residual::add::<f64>(&mut want_res, &a.get(), &b.get());
            check("residual_layernorm residual", dt, &res.get(), &want_res);
            // the layernorm is of the stored (for bf16: rounded) residual
            let (mut wo, mut wm, mut wr) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            ops::layernorm::forward::<f64>(&mut wo, &mut wm, &mut wr, &res.get(), &w.get(), &bias.get(), c);
            check("residual_layernorm out", dt, &out.get(), &wo);
            check("residual_layernorm mean", DType::F32, &f64s(&mean), &wm);
            check("residual_layernorm rstd", DType::F32, &f64s(&rstd), &wr);
        }
    }
}

// ------------------------------------------------------------------------------------------------ rmsnorm

fn rmsnorm_case(l: &dyn Launcher, dt: DType, n: usize, c: usize, eps: f64, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = DBuf::new(dt, &randn(&mut rng, n * c, 1.5));
    let w = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let out = DBuf::poisoned(dt, n * c);
    let rstd = SimBuf::<f32>::poisoned(n, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::rmsnorm_forward(l, dt, out.ptr(), rstd.ptr(), x.ptr(), w.ptr(), n, c, eps) }.unwrap();
    let (mut wo, mut wr) = (vec![0.0; n * c], vec![0.0; n]);
    ops::rmsnorm::forward::<f64>(&mut wo, &mut wr, &x.get(), &w.get(), c, eps);
    check(&format!("rmsnorm_forward {n}x{c} out"), dt, &out.get(), &wo);
    // the statistics are f32 whatever the storage type
    check(&format!("rmsnorm_forward {n}x{c} rstd"), DType::F32, &f64s(&rstd), &wr);

    let dout = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
    let dinp = DBuf::new(dt, &randn(&mut rng, n * c, 1.0));
    let dw = DBuf::new(dt, &randn(&mut rng, c, 1.0));
    let (mut wdi, mut wdw) = (dinp.get(), dw.get());
    ops::rmsnorm::backward::<f64>(&mut wdi, &mut wdw, &dout.get(), &x.get(), &w.get(), &wr, c);
    let s = scratch(kl::rmsnorm_backward_scratch_bytes(n, c));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::rmsnorm_backward(l, dt, dinp.ptr(), dw.ptr(), dout.ptr(), x.ptr(), w.ptr(), rstd.ptr(), n, c, s.ptr())
    }
    .unwrap();
    check(&format!("rmsnorm_backward {n}x{c} dinp"), dt, &dinp.get(), &wdi);
    check(&format!("rmsnorm_backward {n}x{c} dw"), dt, &dw.get(), &wdw);
}

#[test]
fn rmsnorm_forward_backward() {
    let l = launcher();
    for dt in DTYPES {
        // A warp per row (RMS_BLOCK / 32 rows per block: 37 rows end on a ragged block); rows of 3+ passes of 32
        // lanes in single elements (67) and in 16-byte packs (ln_packed); dw's column sums over two COLSUM_ROWS
        // row chunks, the last ragged (COLSUM_ROWS + 4 rows), and ragged COLSUM_COLS column blocks (67).
        let shapes = [(1usize, 1usize), (5, 31), (37, 67), (g(COLSUM_ROWS) + 4, 96), (9, ln_packed())];
        for (i, (n, c)) in shapes.into_iter().enumerate() {
            rmsnorm_case(&l, dt, n, c, [1e-5, 1e-6][i % 2], 20 + i as u64);
        }
    }
}

// ------------------------------------------------------------------------------------------------ rope

/// RoPE's f32 tolerance: the kernels take the angle as the f32 product of the f32 table and the position (as
/// Hugging Face does), the reference in f64. At positions p * inv_freq < 4096 the product is off by at most half
/// an ulp (1.2e-4 rad) plus p times the table's rounding (4000 * 6e-8 = 2.4e-4 rad), so each rotated element by
/// at most ~3.7e-4 of its pair's norm: 1e-3 leaves room for the kernel's sin and cos (2e-7 absolute) and still
/// fails a wrong sign, pair or position (errors of order 1). bf16: the storage rounding (TOL_BF16) dominates.
const TOL_ROPE_F32: f64 = 1e-3;

fn rope_case(l: &dyn Launcher, dt: DType, rope: &ops::rope::Rope, pos0: &[u32], shape: kl::RopeShape, seed: u64) {
    let kl::RopeShape { b, t, nh, nkv, hs } = shape;
    let tol = if dt == DType::F32 { TOL_ROPE_F32 } else { TOL_BF16 };
    let what = format!("rope {dt:?} b={b} t={t} nh={nh} nkv={nkv} hs={hs} pos0={pos0:?}");
    let mut rng = Rng::new(seed);
    let n = b * t * (nh + 2 * nkv) * hs;
    let inv: Vec<f32> = rope.inv_freq.iter().map(|&f| f as f32).collect();
    // x holds one qkv row more than the launch, and pos0 one position more: the kernels must leave the row
    // alone (past the buffer, the guard would not show it: rotating its NaN leaves NaN).
    let (fd, pd) = (SimBuf::from_slice(&inv), SimBuf::from_slice(&[pos0, &[1234]].concat()));
    for (backward, name) in [(false, "forward"), (true, "backward")] {
        let x = DBuf::new(dt, &randn(&mut rng, n + (nh + 2 * nkv) * hs, 1.0));
        let mut want = x.get();
        // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
        unsafe {
            if backward {
                ops::rope::backward::<f64>(&mut want[..n], rope, pos0, b, t, nh, nkv);
                kl::rope_backward(l, dt, x.ptr(), fd.ptr(), pd.ptr(), shape)
            } else {
                ops::rope::forward::<f64>(&mut want[..n], rope, pos0, b, t, nh, nkv);
                kl::rope_forward(l, dt, x.ptr(), fd.ptr(), pd.ptr(), shape)
            }
        }
        .unwrap();
        let e = rel_err(&x.get(), &want);
        assert!(e <= tol, "{what} {name}: relative error {e:.3e} > {tol:.1e}");
    }
}

#[test]
fn rope_forward_backward() {
    use ops::rope::{Llama3Scaling, Rope};
    let l = launcher();
    let llama3 = Llama3Scaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    // (rope, pos0, shape): grouped heads (NKV < NH, and NKV = NH), head sizes 6, 64 and 128, positions up to
    // ~4000 (where the f32 angle is least exact); each launch runs more than two blocks of EW_BLOCK threads and
    // ends on a ragged one (3456, 6336 and 270 threads).
    let s = |b, t, nh, nkv, hs| kl::RopeShape { b, t, nh, nkv, hs };
    let cases = [
        (Rope::new(500000.0, 64, Some(llama3)), vec![0u32, 3990], s(2, 9, 4, 2, 64)),
        (Rope::new(100000.0, 128, None), vec![4000 - 33], s(1, 33, 2, 1, 128)),
        (Rope::new(10000.0, 6, None), vec![0, 7, 1000], s(3, 5, 3, 3, 6)),
    ];
    for dt in DTYPES {
        for (i, (rope, pos0, shape)) in cases.iter().enumerate() {
            rope_case(&l, dt, rope, pos0, *shape, 30 + i as u64);
        }
    }
}

// ------------------------------------------------------------------------------------------------ encoder

fn encoder_case(l: &dyn Launcher, dt: DType, c: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let (b, t, v, max_t) = (3usize, 13usize, 11usize, 40usize);
    // few distinct tokens: many repeats across rows; ragged pos0 (KV-cache style)
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let pos0: Vec<u32> = vec![0, 5, 27];
    let wte = DBuf::new(dt, &randn(&mut rng, v * c, 1.0));
    let wpe = DBuf::new(dt, &randn(&mut rng, max_t * c, 1.0));
    let tok_d = SimBuf::from_slice(&tokens);
    // one position more than the B rows have, in range: a kernel that reads pos0 past row B - 1 takes it
    let pos_d = SimBuf::from_slice(&[pos0.as_slice(), &[1]].concat());
    let out = DBuf::poisoned(dt, b * t * c);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::encoder_forward(l, dt, out.ptr(), tok_d.ptr(), wte.ptr(), wpe.ptr(), pos_d.ptr(), b, t, c) }.unwrap();
    let mut want = vec![0.0; b * t * c];
    ops::embedding::forward::<f64>(&mut want, &tokens, &wte.get(), &wpe.get(), &pos0, t, c);
    check("encoder_forward", dt, &out.get(), &want);

    let dout = DBuf::new(dt, &randn(&mut rng, b * t * c, 1.0));
    let dwte = DBuf::new(dt, &randn(&mut rng, v * c, 1.0));
    let dwpe = DBuf::new(dt, &randn(&mut rng, max_t * c, 1.0));
    let (mut w1, mut w2) = (dwte.get(), dwpe.get());
    ops::embedding::backward::<f64>(&mut w1, Some(&mut w2), &dout.get(), &tokens, &pos0, t, c);
    let plan = kl::EncoderPlan::new(&tokens);
    let plan_d = SimBuf::from_slice(&plan.data);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::encoder_backward(
            l,
            dt,
            dwte.ptr(),
            Some(dwpe.ptr()),
            dout.ptr(),
            plan_d.ptr(),
            plan.buckets,
            pos_d.ptr(),
            &pos0,
            t,
            c,
        )
    }
    .unwrap();
    check("encoder_backward dwte", dt, &dwte.get(), &w1);
    check("encoder_backward dwpe", dt, &dwpe.get(), &w2);
    vec![out.get(), dwte.get(), dwpe.get()]
}

#[test]
fn encoder_plan_buckets_rows_by_token() {
    let p = kl::EncoderPlan::new(&[5, 2, 5, 9, 2, 5]);
    assert_eq!(p.buckets, 3);
    // start[4], token[3], rows[6]
    assert_eq!(p.data, vec![0, 2, 5, 6, 2, 5, 9, 1, 4, 0, 2, 5, 3]);
}

#[test]
fn encoder_forward_backward() {
    for dt in DTYPES {
        encoder_case(&launcher(), dt, 37, 20);
        // the token-bucket backward's threads stride over the columns (blocks of at most EW_BLOCK): 3 passes
        encoder_case(&launcher(), dt, 2 * g(EW_BLOCK) + 5, 21);
    }
}

/// More token buckets than the largest grid of the bucket backward (ENC_WTE_MAX_GRID blocks): its blocks
/// stride over the buckets, the last pass ragged. One row per token, one column (blocks of 32 threads).
#[test]
fn encoder_backward_strides_over_buckets() {
    let l = launcher();
    let dt = DType::F32;
    let (t, c) = (g(ENC_WTE_MAX_GRID) + 37, 1usize);
    let mut rng = Rng::new(22);
    // distinct tokens in a shuffled order: one bucket each
    let mut tokens: Vec<u32> = (0..t as u32).collect();
    for i in (1..t).rev() {
        tokens.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let pos0 = vec![0u32];
    let dout = DBuf::new(dt, &randn(&mut rng, t * c, 1.0));
    let dwte = DBuf::new(dt, &randn(&mut rng, t * c, 1.0));
    let dwpe = DBuf::new(dt, &randn(&mut rng, t * c, 1.0));
    let (mut w1, mut w2) = (dwte.get(), dwpe.get());
    ops::embedding::backward::<f64>(&mut w1, Some(&mut w2), &dout.get(), &tokens, &pos0, t, c);
    let plan = kl::EncoderPlan::new(&tokens);
    assert!(plan.buckets > g(ENC_WTE_MAX_GRID));
    let (plan_d, pos_d) = (SimBuf::from_slice(&plan.data), SimBuf::from_slice(&pos0));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::encoder_backward(
            &l,
            dt,
            dwte.ptr(),
            Some(dwpe.ptr()),
            dout.ptr(),
            plan_d.ptr(),
            plan.buckets,
            pos_d.ptr(),
            &pos0,
            t,
            c,
        )
    }
    .unwrap();
    check("encoder_backward dwte (strided buckets)", dt, &dwte.get(), &w1);
    check("encoder_backward dwpe (strided buckets)", dt, &dwpe.get(), &w2);
}

// ------------------------------------------------------------------------------------------------ cross-entropy

#[allow(clippy::too_many_arguments)]
fn crossentropy_case(
    l: &dyn Launcher,
    dt: DType,
    n: usize,
    v: usize,
    vp: usize,
    inv_temp: f64,
    want_grad: bool,
    seed: u64,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let logits = DBuf::new(dt, &randn(&mut rng, n * vp, 3.0));
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    let weights: Vec<f64> = (0..n).map(|i| if i % 4 == 3 { 0.0 } else { rng.uniform() }).collect();
    let (td, wd) = (SimBuf::from_slice(&targets), f32buf(&weights));
    let losses = SimBuf::<f32>::poisoned(n, 0xff);
    let mut want_logits = logits.get();
    let mut want_losses = vec![0.0; n];
    ops::crossentropy::forward_backward::<f64>(
        &mut want_losses,
        &mut want_logits,
        &targets,
        &weights,
        v,
        vp,
        inv_temp,
        want_grad,
    );
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::crossentropy(l, dt, losses.ptr(), logits.ptr(), td.ptr(), wd.ptr(), n, v, vp, inv_temp as f32, want_grad)
    }
    .unwrap();
    // losses are f32 whatever the logits' type; with bf16 logits the inputs are the same bf16 values
    check(&format!("crossentropy losses V={v}"), DType::F32, &f64s(&losses), &want_losses);
    let got = logits.get();
    check(&format!("crossentropy dlogits V={v} grad={want_grad}"), dt, &got, &want_logits);
    if want_grad {
        for i in 0..n {
            assert!(got[i * vp + v..(i + 1) * vp].iter().all(|&x| x == 0.0), "pad columns of row {i} not zeroed");
        }
    }
    vec![f64s(&losses), got]
}

/// (rows, V, Vp) for the one-block-per-row kernels with `block` threads: besides small and padded rows, rows of
/// three or more passes of the block, the last ragged, in 16-byte chunks (Vp a multiple of the pack, V ending
/// inside a chunk) and in single elements (odd Vp).
fn row_shapes(block: usize) -> [(usize, usize, usize); 6] {
    let packed = 2 * block * PACK + 5 * PACK;
    let single = 2 * block + 3;
    [(1, 1, 1), (9, 97, 104), (6, 1000, 1024), (3, 300, 300), (3, packed - 3, packed), (2, single, single)]
}

#[test]
fn crossentropy_fused() {
    let l = launcher();
    for dt in DTYPES {
        for (n, v, vp) in row_shapes(g(CE_BLOCK)) {
            crossentropy_case(&l, dt, n, v, vp, 1.0, true, 30 + v as u64);
            crossentropy_case(&l, dt, n, v, vp, 0.7, true, 31 + v as u64);
            crossentropy_case(&l, dt, n, v, vp, 1.3, false, 32 + v as u64);
        }
    }
}

// ------------------------------------------------------------------------------------------------ entropy

/// The entropy kernel against `ops::entropy` on random rows; dlogits is not touched without `want_grad`.
#[allow(clippy::too_many_arguments)]
fn entropy_case(l: &dyn Launcher, dt: DType, n: usize, v: usize, vp: usize, inv_temp: f64, want_grad: bool, seed: u64) {
    let mut rng = Rng::new(seed);
    let logits = DBuf::new(dt, &randn(&mut rng, n * vp, 3.0));
    let coef: Vec<f64> = (0..n).map(|i| if i % 4 == 3 { 0.0 } else { rng.uniform() - 0.3 }).collect();
    let cd = f32buf(&coef);
    let ent = SimBuf::<f32>::poisoned(n, 0xff);
    let dlogits = DBuf::poisoned(dt, n * vp);
    let (mut want_ent, mut want_d) = (vec![0.0; n], vec![f64::NAN; n * vp]);
    ops::entropy::forward_backward::<f64>(&mut want_ent, &mut want_d, &logits.get(), &coef, v, vp, inv_temp, want_grad);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        kl::entropy(l, dt, ent.ptr(), dlogits.ptr(), logits.ptr(), cd.ptr(), n, v, vp, inv_temp as f32, want_grad)
    }
    .unwrap();
    // the entropies are f32 whatever the logits' type
    check(&format!("entropy V={v} Vp={vp} inv_temp={inv_temp}"), DType::F32, &f64s(&ent), &want_ent);
    let got = dlogits.get();
    if want_grad {
        check(&format!("entropy dlogits V={v} Vp={vp}"), dt, &got, &want_d);
        for i in 0..n {
            assert!(got[i * vp + v..(i + 1) * vp].iter().all(|&x| x == 0.0), "pad columns of row {i} not zeroed");
        }
    } else {
        let poison = DBuf::poisoned(dt, 1).bits()[0];
        assert!(dlogits.bits().iter().all(|&b| b == poison), "dlogits written without want_grad");
    }
}

#[test]
fn entropy_forward_backward() {
    let l = launcher();
    for dt in DTYPES {
        for (n, v, vp) in row_shapes(g(ENTROPY_BLOCK)) {
            entropy_case(&l, dt, n, v, vp, 1.0, true, 130 + v as u64);
            entropy_case(&l, dt, n, v, vp, 0.7, true, 131 + v as u64);
            entropy_case(&l, dt, n, v, vp, 1.3, false, 132 + v as u64);
        }
    }
}

// ------------------------------------------------------------------------------------------------ row copies

/// copy_rows (KV-cache append, logits-row gather, cache compaction) against the row-by-row copies it replaces:
/// every listed row bit-exact, every other row untouched. Row widths: one element, a short row, and one that
/// the block strides over twice and ends ragged.
#[test]
fn copy_rows_scatter_and_gather() {
    let l = launcher();
    let pairs: [(u32, u32); 5] = [(10, 0), (3, 6), (0, 6), (7, 2), (4, 5)];
    let (src_rows, dst_rows) = (7, 11);
    let table = SimBuf::from_slice(&pairs.iter().flat_map(|&(d, s)| [d, s]).collect::<Vec<u32>>());
    for dt in DTYPES {
        for w in [1, 48, 2 * g(EW_BLOCK) + 3] {
            let src = DBuf::new(dt, &randn(&mut Rng::new(w as u64), src_rows * w, 1.0));
            let dst = DBuf::poisoned(dt, dst_rows * w);
            // SAFETY: `table` holds the pairs; every row they name lies inside `src` and `dst`.
            unsafe { kl::copy_rows(&l, dt, dst.ptr(), src.ptr(), table.ptr(), pairs.len(), w) }.unwrap();
            let (got, want, poison) = (dst.bits(), src.bits(), DBuf::poisoned(dt, 1).bits()[0]);
            for r in 0..dst_rows {
                let row = &got[r * w..(r + 1) * w];
                match pairs.iter().find(|p| p.0 as usize == r) {
                    Some(&(_, s)) => {
                        assert_eq!(row, &want[s as usize * w..(s as usize + 1) * w], "row {r} {dt:?} w={w}")
                    }
                    None => assert!(row.iter().all(|&b| b == poison), "row {r} written ({dt:?}, w={w})"),
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------ sampler

/// The sampling kernel against `ops::sample::pick` on the same logits (bf16: the rounded values, read exactly
/// as f32) and uniforms. Equality, not a tolerance: both form every f64 sum from the same terms in the same
/// order (the reference's blocked order) and call the same libm `exp`/`ln` (the simulator runs on the host),
/// so the ids must be the same and the log-probs the same f32. Rows carry three planted ties at the maximum (and
/// bf16 has many ties of its own), uniforms of 0 and just below 1, and one row a non-finite logit.
fn sample_case(l: &dyn Launcher, dt: DType, rows: usize, v: usize, vp: usize, s: Sampling, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut x = randn(&mut rng, rows * vp, 3.0);
    for r in 0..rows {
        let row = &mut x[r * vp..r * vp + v];
        let top = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if r % 2 == 0 {
            row[v - 1] = top + 1.0;
            row[v / 2] = top + 1.0;
            row[v / 4] = top + 1.0;
        }
    }
    let bad_row = (rows > 2).then_some(rows - 1);
    if let Some(r) = bad_row {
        x[r * vp + v / 3] = f64::NAN;
    }
    let u: Vec<f64> = (0..rows)
        .map(|r| {
            if r == 0 {
                0.0
            } else if r == 1 {
                1.0 - 1e-12
            } else {
                rng.uniform()
            }
        })
        .collect();
    let logits = DBuf::new(dt, &x);
    let ud = SimBuf::from_slice(&u);
    let (ids, lps) = (SimBuf::<u32>::poisoned(rows, 0xff), SimBuf::<f32>::poisoned(rows, 0xff));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::sample(l, dt, ids.ptr(), lps.ptr(), logits.ptr(), ud.ptr(), rows, v, vp, &s) }.unwrap();
    let stored = logits.get();
    for r in 0..rows {
        let row: Vec<f32> = stored[r * vp..r * vp + v].iter().map(|&x| x as f32).collect();
        let (id, lp) = (ids.as_slice()[r], lps.as_slice()[r]);
        let what = format!("sample {dt:?} row {r} V={v} Vp={vp} {s:?}");
        match ops::sample::pick(&row, &s, u[r]) {
            Ok((want_id, want_lp)) => {
                assert_eq!(id, want_id, "{what}: id");
                assert_eq!(lp.to_bits(), want_lp.to_bits(), "{what}: log-prob {lp} vs {want_lp}");
            }
            Err(_) => {
                assert_eq!(Some(r), bad_row, "{what}");
                assert_eq!(id as usize, v + v / 3, "{what}: the non-finite logit's id");
                assert!(lp.is_nan(), "{what}: the non-finite logit");
            }
        }
    }
}

#[test]
fn sample_matches_the_reference_choice() {
    let l = launcher();
    let plain = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
    for dt in DTYPES {
        for (n, v, vp) in row_shapes(g(SAMPLE_BLOCK)) {
            let seed = 230 + v as u64;
            sample_case(&l, dt, n.max(4), v, vp, plain, seed);
            sample_case(&l, dt, n, v, vp, Sampling { temperature: 0.7, ..plain }, seed + 1);
            sample_case(&l, dt, n, v, vp, Sampling { temperature: 0.0, ..plain }, seed + 2);
            sample_case(&l, dt, n, v, vp, Sampling { top_k: 7, ..plain }, seed + 3);
            sample_case(&l, dt, n, v, vp, Sampling { temperature: 1.3, top_k: 20, top_p: 0.8 }, seed + 4);
            sample_case(&l, dt, n, v, vp, Sampling { top_p: 0.5, ..plain }, seed + 5);
            // A nucleus of most of the row (a large top-p at a high temperature), and a top-k cut inside
            // the planted tie at the maximum (the bisection on the id).
            sample_case(&l, dt, n, v, vp, Sampling { temperature: 3.0, top_k: 0, top_p: 0.95 }, seed + 6);
            sample_case(&l, dt, n, v, vp, Sampling { top_k: 2, ..plain }, seed + 7);
        }
    }
}

/// The sampling kernel on rows built to sit on its edges, each against the reference's choice: two
/// non-finite logits in the first chunk (the first is reported), greedy with the maximum at id 0 tied
/// with id 1 in the same chunk (the first maximum wins), and uniforms that land exactly on a cumulative
/// sum (equal logits, chunks of 4 ids: u * total = 2 inside the first chunk, = 4 at its end): the draw is
/// the first id whose cumulative weight reaches the target; the same with top-k 8 (u * kept mass = 2);
/// top-k 8 with padding columns far above every real logit (never drawn); top-k 2 on a maximum at id 0
/// tied with id 1 (u = 0 draws the first kept id: the first maximum); top-k 1 on a maximum at id 0 tied with
/// id 5 of the next chunk (only id 0 is kept, so even u = 0.9 draws it).
#[test]
fn sample_edges_first_bad_first_max_and_an_exact_cdf_boundary() {
    let l = launcher();
    let (v, vp) = (4 * g(SAMPLE_BLOCK), 4 * g(SAMPLE_BLOCK) + 8);
    let plain = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
    let mut x = vec![0.0; 8 * vp];
    x[0] = f64::NAN;
    x[1] = f64::INFINITY;
    x[vp] = 5.0;
    x[vp + 1] = 5.0;
    x[5 * vp + v..6 * vp].fill(100.0);
    x[6 * vp] = 10.0;
    x[6 * vp + 1] = 10.0;
    x[7 * vp] = 10.0;
    x[7 * vp + 5] = 10.0;
    let u = [0.5, 0.5, 2.0 / v as f64, 4.0 / v as f64, 0.25, 0.5, 0.0, 0.9];
    for dt in DTYPES {
        let (greedy, top8) = (Sampling { temperature: 0.0, ..plain }, Sampling { top_k: 8, ..plain });
        let (top2, top1) = (Sampling { top_k: 2, ..plain }, Sampling { top_k: 1, ..plain });
        for (r, s) in [(0, plain), (1, greedy), (2, plain), (3, plain), (4, top8), (5, top8), (6, top2), (7, top1)] {
            let logits = DBuf::new(dt, &x[r * vp..(r + 1) * vp]);
            let ud = SimBuf::from_slice(&u[r..r + 1]);
            let (ids, lps) = (SimBuf::<u32>::poisoned(1, 0xff), SimBuf::<f32>::poisoned(1, 0xff));
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::sample(&l, dt, ids.ptr(), lps.ptr(), logits.ptr(), ud.ptr(), 1, v, vp, &s) }.unwrap();
            let row: Vec<f32> = x[r * vp..r * vp + v].iter().map(|&y| y as f32).collect();
            let id = ids.as_slice()[0];
            match ops::sample::pick(&row, &s, u[r]) {
                Ok((want, _)) => assert_eq!(id, want, "{dt:?} row {r}"),
                Err(_) => assert_eq!(id as usize, v, "{dt:?} row {r}: the first non-finite logit is id 0"),
            }
            assert_eq!([v as u32, 0, 1, 3, 1, 3, 0, 0][r], id, "{dt:?} row {r}: by hand");
        }
    }
}

/// Top-p exactly reached: p set to the mass of the three most likely ids, summed as the contract sums it
/// (V <= SAMPLE_BLOCK: one id per chunk, so the blocked order is id order), keeps those three and not the
/// fourth; a uniform near 1 then draws the kept id last in id order, 30, where keeping the fourth (id 199,
/// the last id) would draw that.
#[test]
fn sample_top_p_reached_exactly_keeps_no_more() {
    let l = launcher();
    let v = 200;
    let mut row: Vec<f32> = (0..v).map(|i| -0.01 * i as f32).collect();
    (row[10], row[20], row[30], row[199]) = (5.0, 4.0, 3.0, 2.5);
    let x: Vec<f64> = row.iter().map(|&x| x as f64).collect();
    let lse = 5.0 + x.iter().fold(0.0, |a, &x| a + (x - 5.0).exp()).ln();
    let p = [10, 20, 30].iter().fold(0.0, |a, &i| a + (x[i] - lse).exp());
    let s = Sampling { temperature: 1.0, top_k: 0, top_p: p };
    let logits = DBuf::new(DType::F32, &x);
    let ud = SimBuf::from_slice(&[1.0 - 1e-9]);
    let (ids, lps) = (SimBuf::<u32>::poisoned(1, 0xff), SimBuf::<f32>::poisoned(1, 0xff));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::sample(&l, DType::F32, ids.ptr(), lps.ptr(), logits.ptr(), ud.ptr(), 1, v, v, &s) }.unwrap();
    assert_eq!(ops::sample::pick(&row, &s, 1.0 - 1e-9).unwrap().0, 30, "the reference");
    assert_eq!(ids.as_slice()[0], 30, "the kernel");
}

// ------------------------------------------------------------------------------------------------ AdamW

/// AdamW over one tensor through the multi-tensor kernel (a one-tensor chunk table).
#[allow(clippy::too_many_arguments)]
fn adamw_one(
    l: &dyn Launcher,
    dt: DType,
    param: u64,
    master: u64,
    grad: u64,
    m: u64,
    v: u64,
    n: usize,
    h: &ops::adamw::AdamWParams,
) -> anyhow::Result<()> {
    let table =
        kl::adamw_chunks(dt, &[kl::AdamWTensor { param, master, grad, m, v, n, weight_decay: h.weight_decay }])?;
    let td = SimBuf::<u8>::from_slice(bytemuck::cast_slice(&table));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::adamw_multi(l, dt, td.ptr(), table.len(), h) }
}

/// The sum of squares of one tensor through the multi-tensor reduction.
fn sum_squares_one(l: &dyn Launcher, dt: DType, x: u64, n: usize) -> f64 {
    let table = kl::sum_squares_chunks(dt, &[(x, n)]);
    let td = SimBuf::<u8>::from_slice(bytemuck::cast_slice(&table));
    let s = SimBuf::<f64>::poisoned(kl::sum_squares_multi_scratch_bytes(table.len()) / 8, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::sum_squares_multi(l, dt, td.ptr(), table.len(), s.ptr()) }.unwrap();
    s.as_slice()[0]
}

#[test]
fn adamw_and_sum_squares() {
    let l = launcher();
    let mut rng = Rng::new(40);
    // the last: two chunks of the multi-tensor kernels, the second ragged
    for n in [1usize, 333, 5000, g(MULTI_CHUNK) + 4464] {
        for step in [1u64, 7] {
            let h = ops::adamw::AdamWParams {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                step,
                grad_scale: 0.8,
            };
            let p0 = randn(&mut rng, n, 1.0);
            let g = randn(&mut rng, n, 1.0);
            let m0: Vec<f64> = randn(&mut rng, n, 0.1);
            let v0: Vec<f64> = randn(&mut rng, n, 0.1).iter().map(|x| x * x).collect();
            // f32: params are the master weights
            {
                let (p, gd, m, v) = (f32buf(&p0), f32buf(&g), f32buf(&m0), f32buf(&v0));
                let (mut wp, mut wm, mut wv) = (f64s(&p), f64s(&m), f64s(&v));
                ops::adamw::step::<f64>(&mut wp, &f64s(&gd), &mut wm, &mut wv, &h);
                adamw_one(&l, DType::F32, p.ptr(), 0, gd.ptr(), m.ptr(), v.ptr(), n, &h).unwrap();
                check("adamw f32 param", DType::F32, &f64s(&p), &wp);
                check("adamw f32 m", DType::F32, &f64s(&m), &wm);
                check("adamw f32 v", DType::F32, &f64s(&v), &wv);
            }
            // bf16 params + grads, f32 master/m/v
            {
                let (master, m, v) = (f32buf(&p0), f32buf(&m0), f32buf(&v0));
                let param = DBuf::poisoned(DType::BF16, n);
                let gd = DBuf::new(DType::BF16, &g);
                let (mut wp, mut wm, mut wv) = (f64s(&master), f64s(&m), f64s(&v));
                ops::adamw::step::<f64>(&mut wp, &gd.get(), &mut wm, &mut wv, &h);
                adamw_one(&l, DType::BF16, param.ptr(), master.ptr(), gd.ptr(), m.ptr(), v.ptr(), n, &h).unwrap();
                check("adamw bf16 master", DType::F32, &f64s(&master), &wp);
                check("adamw bf16 param", DType::BF16, &param.get(), &wp);
                check("adamw bf16 m", DType::F32, &f64s(&m), &wm);
            }
        }
        for dt in DTYPES {
            let x = DBuf::new(dt, &randn(&mut rng, n, 1.0));
            let got = sum_squares_one(&l, dt, x.ptr(), n);
            let want = ops::adamw::sum_squares::<f64>(&x.get());
            assert!(((got - want) / want).abs() < 1e-12, "sum_squares {dt:?} n={n}: {got} vs {want}");
        }
    }
    // sum_squares_final strides over the partials: more than two blocks' worth (one chunk per small tensor)
    for dt in DTYPES {
        let xs: Vec<DBuf> =
            (0..2 * g(SUMSQ_BLOCK) + 3).map(|i| DBuf::new(dt, &randn(&mut rng, 1 + i % 5, 1.0))).collect();
        let list: Vec<(u64, usize)> = xs.iter().map(|x| (x.ptr(), x.get().len())).collect();
        let table = kl::sum_squares_chunks(dt, &list);
        assert_eq!(table.len(), list.len());
        let td = SimBuf::<u8>::from_slice(bytemuck::cast_slice(&table));
        let s = SimBuf::<f64>::poisoned(kl::sum_squares_multi_scratch_bytes(table.len()) / 8, 0xff);
        // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
        unsafe { kl::sum_squares_multi(&l, dt, td.ptr(), table.len(), s.ptr()) }.unwrap();
        let want: f64 = xs.iter().map(|x| ops::adamw::sum_squares::<f64>(&x.get())).sum();
        let got = s.as_slice()[0];
        assert!(((got - want) / want).abs() < 1e-12, "sum_squares of {} tensors {dt:?}: {got} vs {want}", xs.len());
    }
    assert!(adamw_one(
        &l,
        DType::BF16,
        0,
        0,
        0,
        0,
        0,
        1,
        &ops::adamw::AdamWParams {
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.9,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
            grad_scale: 1.0
        }
    )
    .is_err());
}

// ------------------------------------------------------------------------------------------------ attention

/// Forward with keys from `kv` (Tk rows) and queries at positions pos0[b] + t, NH query heads over NKV kv heads
/// (qkv rows W = C + 2 NKV C / NH wide); returns (out, lse).
#[allow(clippy::too_many_arguments)]
fn attention_fwd_case(
    l: &dyn Launcher,
    dt: DType,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    (nh, nkv): (usize, usize),
    pos0: &[u32],
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    attention_fwd_case_with(l, kl::AttentionImpl::Auto, dt, b, tq, tk, c, (nh, nkv), pos0, seed)
}

/// Row width W = C + 2 NKV HS of a grouped qkv.
fn qkv_width(c: usize, nh: usize, nkv: usize) -> usize {
    c + 2 * nkv * (c / nh)
}

#[allow(clippy::too_many_arguments)]
fn attention_fwd_case_with(
    l: &dyn Launcher,
    imp: kl::AttentionImpl,
    dt: DType,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    (nh, nkv): (usize, usize),
    pos0: &[u32],
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let w = qkv_width(c, nh, nkv);
    let q_src = DBuf::new(dt, &randn(&mut rng, b * tq * w, 1.0));
    let kv = DBuf::new(dt, &randn(&mut rng, b * tk * w, 1.0));
    let pd = SimBuf::from_slice(pos0);
    let out = DBuf::poisoned(dt, b * tq * c);
    let lse = SimBuf::<f32>::poisoned(b * nh * tq, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe {
        let (q, k, p) = (q_src.ptr(), kv.ptr(), pd.ptr());
        kl::attention_forward_with(l, imp, dt, out.ptr(), lse.ptr(), q, k, p, b, tq, tk, c, nh, nkv)
    }
    .unwrap();
    let (mut wo, mut wl) = (vec![0.0; b * tq * c], vec![0.0; b * nh * tq]);
    ops::attention::forward::<f64>(&mut wo, &mut wl, &q_src.get(), &kv.get(), pos0, b, tq, tk, c, nh, nkv);
    let what = format!("attention_forward[{imp:?}] B={b} Tq={tq} Tk={tk} C={c} NH={nh} NKV={nkv}");
    check(&format!("{what} out"), dt, &out.get(), &wo);
    check(&format!("{what} lse"), DType::F32, &f64s(&lse), &wl);
    (out.get(), f64s(&lse))
}

/// The tensor-core (WMMA) forward: bf16, head size 64; ragged T (not a multiple of the 64-row tiles), several
/// key tiles, KV-cache positions. The CUDA-core kernel runs the same bf16 head-64 cases for comparison.
#[test]
fn attention_forward_tensor_cores() {
    let l = launcher();
    for imp in [kl::AttentionImpl::TensorCores, kl::AttentionImpl::Simt] {
        attention_fwd_case_with(&l, imp, DType::BF16, 2, 37, 37, 128, (2, 2), &[0, 0], 90);
        // three query blocks and key tiles (WA_Q = WA_K rows), the last ragged
        let t = 2 * g(WA_K) + 22;
        attention_fwd_case_with(&l, imp, DType::BF16, 1, t, t, 64, (1, 1), &[0], 91);
        attention_fwd_case_with(&l, imp, DType::BF16, 2, 3, 100, 128, (2, 2), &[20, 97], 92);
    }
    // SAFETY: the arguments fail the launch layer's checks, so nothing is launched.
    let e = unsafe {
        kl::attention_forward_with(&l, kl::AttentionImpl::TensorCores, DType::F32, 0, 0, 0, 0, 0, 1, 1, 1, 128, 2, 2)
    }
    .unwrap_err();
    assert!(e.to_string().contains("bf16"), "{e}");
}

/// (B, T, C, NH) of the CUDA-core attention tests: ragged T (blocks of ATT_WARPS rows), T = 70 (three passes of
/// 32 keys or queries, the last ragged), head sizes of one to four lane passes (HS = 48 and 80: two and three
/// passes of 32 dims, the last ragged; 16, 32, 64, 96).
const ATT_SHAPES: [(usize, usize, usize, usize); 6] =
    [(2, 37, 64, 2), (1, 70, 128, 2), (2, 20, 48, 3), (1, 9, 192, 2), (1, 70, 96, 2), (1, 70, 160, 2)];

/// (B, T, C, (NH, NKV)) of the grouped-query tests: four query heads over two kv heads and over one, head sizes
/// 64 (the tensor-core kernels' and two lane passes) and 128 (four), ragged T; T = 70 gives the dkv kernels two
/// query tiles (WB_T rows) and three passes of 32 queries per query head of the group (once: the simulated
/// backward costs O(T^2) per head, so the other shapes stay short).
const GQA_SHAPES: [(usize, usize, usize, (usize, usize)); 4] =
    [(2, 19, 256, (4, 2)), (1, 70, 256, (4, 1)), (1, 21, 512, (4, 2)), (1, 13, 512, (4, 1))];

#[test]
fn attention_forward_training_and_kv_cache() {
    let l = launcher();
    for dt in DTYPES {
        // training form: kv = q_src (here: separate random buffers of the same shape, pos0 = 0)
        for (i, (b, t, c, nh)) in ATT_SHAPES.into_iter().enumerate() {
            attention_fwd_case(&l, dt, b, t, t, c, (nh, nh), &vec![0; b], 60 + i as u64);
        }
        // sampling with a KV cache: few new queries at ragged absolute positions
        attention_fwd_case(&l, dt, 2, 5, 40, 64, (2, 2), &[10, 35], 65);
        attention_fwd_case(&l, dt, 3, 1, 33, 96, (3, 3), &[0, 32, 17], 66);
    }
}

/// Grouped-query attention forward (NKV < NH) against the reference: the CUDA-core kernels in f32 and bf16 and
/// the tensor-core kernel (bf16, head size 64), in training form and with a KV cache longer than Tq at ragged
/// positions (pos0 > 0; the tensor-core kernel over two key tiles).
#[test]
fn attention_forward_grouped_kv_heads() {
    let l = launcher();
    use kl::AttentionImpl::{Simt, TensorCores};
    for (dt, imp) in [(DType::F32, Simt), (DType::BF16, Simt), (DType::BF16, TensorCores)] {
        for (i, (b, t, c, heads)) in GQA_SHAPES.into_iter().enumerate() {
            if imp == Simt || c / heads.0 == 64 {
                attention_fwd_case_with(&l, imp, dt, b, t, t, c, heads, &vec![0; b], 400 + i as u64);
            }
        }
        attention_fwd_case_with(&l, imp, dt, 2, 5, 90, 256, (4, 2), &[17, 85], 410);
        attention_fwd_case_with(&l, imp, dt, 2, 3, 70, 256, (4, 1), &[0, 66], 411);
        if imp == Simt {
            attention_fwd_case_with(&l, imp, dt, 2, 4, 40, 512, (4, 1), &[9, 36], 412);
        }
    }
    // SAFETY: the arguments fail the launch layer's checks, so nothing is launched.
    let e = unsafe { kl::attention_forward(&l, DType::F32, 0, 0, 0, 0, 0, 1, 1, 1, 256, 4, 3) }.unwrap_err();
    assert!(e.to_string().contains("multiple of NKV"), "{e}");
}

/// One decode step: `kl::attention_decode` against `ops::attention::forward` with Tq = 1.
#[allow(clippy::too_many_arguments)]
fn attention_decode_case(
    l: &dyn Launcher,
    dt: DType,
    b: usize,
    tk: usize,
    c: usize,
    (nh, nkv): (usize, usize),
    pos0: &[u32],
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let w = qkv_width(c, nh, nkv);
    let q_src = DBuf::new(dt, &randn(&mut rng, b * w, 1.0));
    let kv = DBuf::new(dt, &randn(&mut rng, b * tk * w, 1.0));
    let pd = SimBuf::from_slice(pos0);
    let out = DBuf::poisoned(dt, b * c);
    let lse = SimBuf::<f32>::poisoned(b * nh, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::attention_decode(l, dt, out.ptr(), lse.ptr(), q_src.ptr(), kv.ptr(), pd.ptr(), b, tk, c, nh, nkv) }
        .unwrap();
    let (mut wo, mut wl) = (vec![0.0; b * c], vec![0.0; b * nh]);
    ops::attention::forward::<f64>(&mut wo, &mut wl, &q_src.get(), &kv.get(), pos0, b, 1, tk, c, nh, nkv);
    let what = format!("attention_decode B={b} Tk={tk} C={c} NH={nh} NKV={nkv} pos0={pos0:?}");
    check(&format!("{what} out"), dt, &out.get(), &wo);
    check(&format!("{what} lse"), DType::F32, &f64s(&lse), &wl);
}

/// The decode attention kernel (one query row per batch row against a KV cache, what the engine runs when
/// Tq = 1) against `ops::attention::forward` with Tq = 1. Caches long enough that every warp of a block takes
/// two or more 32-key tiles and the last one ragged (Tk = 2 * 32 * DEC_WARPS + 13), positions that leave some
/// warps without keys (0, 5), head sizes of one, two and four lane passes (16, 48, 96, 128), grouped kv heads
/// (NH 4 over NKV 2 and 1, head sizes 64 and 128). Tolerances as for the training kernel: f32 summation order
/// over <= 269 keys, bf16 one rounding of the output.
#[test]
fn attention_decode_matches_reference() {
    let l = launcher();
    let tk = 2 * 32 * g(DEC_WARPS) + 13;
    for dt in DTYPES {
        for (i, (b, c, heads, pos0)) in [
            (3, 64, (4, 4), vec![0, tk as u32 - 1, 140]),
            (2, 96, (2, 2), vec![5, 200]),
            (2, 128, (1, 1), vec![tk as u32 - 1, 31]),
            (1, 48, (3, 3), vec![64]),
            (2, 256, (4, 2), vec![tk as u32 - 1, 5]),
            (2, 512, (4, 1), vec![140, tk as u32 - 1]),
        ]
        .into_iter()
        .enumerate()
        {
            attention_decode_case(&l, dt, b, tk, c, heads, &pos0, 300 + i as u64);
        }
    }
}

fn attention_bwd_case(
    l: &dyn Launcher,
    dt: DType,
    b: usize,
    t: usize,
    c: usize,
    heads: (usize, usize),
    seed: u64,
) -> Vec<f64> {
    attention_bwd_cases(l, &[kl::AttentionImpl::Auto], dt, b, t, c, heads, seed).remove(0)
}

/// The backward with each kernel choice in `imps` on the same inputs (one forward), each checked against the
/// reference; returns each dqkv.
#[allow(clippy::too_many_arguments)]
fn attention_bwd_cases(
    l: &dyn Launcher,
    imps: &[kl::AttentionImpl],
    dt: DType,
    b: usize,
    t: usize,
    c: usize,
    (nh, nkv): (usize, usize),
    seed: u64,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let w = qkv_width(c, nh, nkv);
    let qkv = DBuf::new(dt, &randn(&mut rng, b * t * w, 1.0));
    let dout = DBuf::new(dt, &randn(&mut rng, b * t * c, 1.0));
    let pos0 = vec![0u32; b];
    let pd = SimBuf::from_slice(&pos0);
    let out = DBuf::poisoned(dt, b * t * c);
    let lse = SimBuf::<f32>::poisoned(b * nh * t, 0xff);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::attention_forward(l, dt, out.ptr(), lse.ptr(), qkv.ptr(), qkv.ptr(), pd.ptr(), b, t, t, c, nh, nkv) }
        .unwrap();
    // reference backward from the reference forward's out/lse (f64) on the same inputs
    let (mut wo, mut wl) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
    ops::attention::forward::<f64>(&mut wo, &mut wl, &qkv.get(), &qkv.get(), &pos0, b, t, t, c, nh, nkv);
    let mut want = vec![f64::NAN; b * t * w];
    ops::attention::backward::<f64>(&mut want, &dout.get(), &qkv.get(), &wo, &wl, b, t, c, nh, nkv);
    let mut res = Vec::new();
    for &imp in imps {
        let dqkv = DBuf::poisoned(dt, b * t * w);
        let s = scratch(kl::attention_backward_scratch_bytes(b, t, nh));
        // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
        unsafe {
            kl::attention_backward_with(
                l,
                imp,
                dt,
                dqkv.ptr(),
                dout.ptr(),
                qkv.ptr(),
                out.ptr(),
                lse.ptr(),
                b,
                t,
                c,
                nh,
                nkv,
                s.ptr(),
            )
        }
        .unwrap();
        check(&format!("attention_backward[{imp:?}] B={b} T={t} C={c} NH={nh} NKV={nkv}"), dt, &dqkv.get(), &want);
        res.push(dqkv.get());
    }
    res
}

#[test]
fn attention_backward_matches_reference() {
    let l = launcher();
    for dt in DTYPES {
        for (i, (b, t, c, nh)) in ATT_SHAPES.into_iter().chain([(1, 45, 128, 2), (1, 7, 192, 2)]).enumerate() {
            attention_bwd_case(&l, dt, b, t, c, (nh, nh), 70 + i as u64);
        }
    }
    assert!(
        // SAFETY: the arguments fail the launch layer's checks, so nothing is launched.
        unsafe { kl::attention_forward(&l, DType::F32, 0, 0, 0, 0, 0, 1, 1, 1, 2 * 160, 2, 2) }.is_err(),
        "head size 160 must be refused"
    );
}

/// Grouped-query attention backward (NKV < NH): dk, dv of a kv head summed over its query heads. The CUDA-core
/// kernels in f32 and bf16 and the tensor-core ones (bf16, head size 64, checked against the CUDA-core result as
/// in `attention_backward_tensor_cores`), each against the reference; and bit-identical under race mode.
#[test]
fn attention_backward_grouped_kv_heads() {
    let l = launcher();
    use kl::AttentionImpl::{Simt, TensorCores};
    for (i, (b, t, c, heads)) in GQA_SHAPES.into_iter().enumerate() {
        attention_bwd_cases(&l, &[Simt], DType::F32, b, t, c, heads, 420 + i as u64);
        let imps: &[kl::AttentionImpl] = if c / heads.0 == 64 { &[TensorCores, Simt] } else { &[Simt] };
        let r = attention_bwd_cases(&l, imps, DType::BF16, b, t, c, heads, 420 + i as u64);
        if let [wmma, simt] = &r[..] {
            let e = rel_err(wmma, simt);
            assert!(
                e <= 2.0 * TOL_BF16,
                "attention_backward B={b} T={t} {heads:?}: tensor cores vs CUDA cores {e:.3e}"
            );
        }
    }
    let (b, t, c, heads) = GQA_SHAPES[0];
    let want = attention_bwd_cases(&SimLauncher::ordered(), &[TensorCores, Simt], DType::BF16, b, t, c, heads, 430);
    let got = attention_bwd_cases(&SimLauncher::racy(1), &[TensorCores, Simt], DType::BF16, b, t, c, heads, 430);
    assert_eq!(got, want, "grouped-query attention backward differs under race mode");
}

/// The tensor-core (WMMA) backward: bf16, head size 64, ragged T (one row; below, at and above the 64-row
/// tiles; three tiles), against the f64 reference and against the CUDA-core backward on the same inputs.
/// Tolerance: TOL_BF16 as for the CUDA-core kernels. Besides the final rounding of dq, dk, dv to bf16 (<= 2^-8
/// relative), the tensor-core path rounds P and dS to bf16 before the products (another <= 2^-8 relative per
/// term); those roundings are independent across the terms of each sum, so they add to the relative error of
/// the sum in quadrature rather than linearly (measured: 2.4e-3 here, against 1.8e-3 for the CUDA-core
/// kernels). The two kernels' results may differ by both errors: 2 * TOL_BF16.
/// Simulated WMMA is slow (every lane computes the whole tile): the shapes are kept small.
#[test]
fn attention_backward_tensor_cores() {
    let l = launcher();
    use kl::AttentionImpl::{Auto, Simt, TensorCores};
    for (i, (b, t, nh)) in [(2usize, 1usize, 2usize), (2, 37, 2), (1, g(WB_T), 3), (2, 100, 2), (1, 2 * g(WB_T) + 2, 2)]
        .into_iter()
        .enumerate()
    {
        let c = 64 * nh;
        // Auto takes the tensor-core kernels for bf16 / head size 64
        let imps: &[kl::AttentionImpl] = if i == 1 { &[TensorCores, Simt, Auto] } else { &[TensorCores, Simt] };
        let r = attention_bwd_cases(&l, imps, DType::BF16, b, t, c, (nh, nh), 100 + i as u64);
        let e = rel_err(&r[0], &r[1]);
        println!("attention_backward B={b} T={t} NH={nh}: tensor cores vs CUDA cores relative difference {e:.3e}");
        assert!(e <= 2.0 * TOL_BF16, "attention_backward B={b} T={t} NH={nh}: tensor cores vs CUDA cores {e:.3e}");
        if r.len() > 2 {
            assert_eq!(r[2], r[0], "Auto does not take the tensor-core backward");
        }
    }
    // deterministic: bit-identical under random block order and thread interleaving (several tiles each way)
    let want = attention_bwd_cases(&SimLauncher::ordered(), &[TensorCores], DType::BF16, 1, 70, 128, (2, 2), 110);
    for seed in [1u64, 2] {
        let got = attention_bwd_cases(&SimLauncher::racy(seed), &[TensorCores], DType::BF16, 1, 70, 128, (2, 2), 110);
        assert_eq!(got, want, "attention_backward (tensor cores) differs under race mode seed {seed}");
    }
    // SAFETY: the arguments fail the launch layer's checks, so nothing is launched.
    let e = unsafe {
        kl::attention_backward_with(&l, kl::AttentionImpl::TensorCores, DType::F32, 0, 0, 0, 0, 0, 1, 1, 128, 2, 2, 0)
    }
    .unwrap_err();
    assert!(e.to_string().contains("bf16"), "{e}");
    // SAFETY: the arguments fail the launch layer's checks, so nothing is launched.
    let e = unsafe {
        kl::attention_backward_with(&l, kl::AttentionImpl::TensorCores, DType::BF16, 0, 0, 8, 0, 0, 1, 1, 128, 2, 2, 0)
    }
    .unwrap_err();
    assert!(e.to_string().contains("aligned"), "{e}");
}

// ------------------------------------------------------------------------------------------------ race mode

/// Kernels with reductions and barriers give bit-identical results under random block order and random
/// thread interleaving (they are deterministic and free of shared-memory races).
#[test]
fn race_mode_same_bits() {
    for dt in DTYPES {
        let a = layernorm_case(&SimLauncher::ordered(), dt, 37, 67, 77);
        let e = encoder_case(&SimLauncher::ordered(), dt, 37, 78);
        let c = crossentropy_case(&SimLauncher::ordered(), dt, 5, 300, 304, 0.9, true, 79);
        let att = attention_bwd_case(&SimLauncher::ordered(), dt, 2, 37, 64, (2, 2), 80);
        for seed in [1u64, 2, 3] {
            let r = SimLauncher::racy(seed);
            assert_eq!(layernorm_case(&r, dt, 37, 67, 77), a, "layernorm differs under race mode seed {seed}");
            assert_eq!(encoder_case(&r, dt, 37, 78), e, "encoder differs under race mode seed {seed}");
            assert_eq!(
                crossentropy_case(&r, dt, 5, 300, 304, 0.9, true, 79),
                c,
                "crossentropy differs under race mode seed {seed}"
            );
            assert_eq!(
                attention_bwd_case(&r, dt, 2, 37, 64, (2, 2), 80),
                att,
                "attention differs under race mode seed {seed}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------------ planted bugs

fn run_simple(
    l: &dyn Launcher,
    kernel: &str,
    cfg: LaunchConfig,
    out_len: usize,
    inp: &[f32],
    extra: &[Arg],
) -> Vec<f64> {
    let out = SimBuf::<f32>::zeros(out_len);
    let x = SimBuf::from_slice(inp);
    let mut args = vec![Arg::Ptr(out.ptr()), Arg::Ptr(x.ptr())];
    args.extend_from_slice(extra);
    // SAFETY: the planted kernels take (out, inp, extra...) and stay within out_len and inp.len() elements
    // for the configurations their tests pass.
    unsafe { l.launch(kernel, cfg, &args) }.unwrap();
    f64s(&out)
}

#[test]
fn planted_missing_barrier_is_caught() {
    let mut rng = Rng::new(50);
    let inp: Vec<f32> = (0..4 * 256).map(|_| rng.normal() as f32).collect();
    let want: Vec<f64> = inp.chunks(256).map(|c| c.iter().map(|&v| v as f64).sum()).collect();
    let cfg = LaunchConfig { grid: [4, 1, 1], block: [256, 1, 1], smem: 0 };
    // Without the race checker, which would report the planted race instead (see planted_races_are_reported).
    for l in [SimLauncher::ordered().without_racecheck(), SimLauncher::racy(5).without_racecheck()] {
        assert!(rel_err(&run_simple(&l, "planted_tree_sum_ok", cfg, 4, &inp, &[]), &want) < TOL_F32);
        let bad = rel_err(&run_simple(&l, "planted_tree_sum_nobarrier", cfg, 4, &inp, &[]), &want);
        assert!(bad > TOL_F32, "missing barrier not caught ({l:?}): error {bad:e}");
    }
}

#[test]
fn planted_missing_barrier_needs_race_mode() {
    let mut rng = Rng::new(51);
    let inp: Vec<f32> = (0..2 * 256).map(|_| rng.normal() as f32).collect();
    let want: Vec<f64> =
        (0..inp.len()).map(|i| inp[i] as f64 - if i % 256 > 0 { inp[i - 1] as f64 } else { 0.0 }).collect();
    let cfg = LaunchConfig { grid: [2, 1, 1], block: [256, 1, 1], smem: 0 };
    // Without the race checker, which reports this race in either schedule (see planted_races_are_reported).
    let ordered = SimLauncher::ordered().without_racecheck();
    assert!(rel_err(&run_simple(&ordered, "planted_neighbor_diff_ok", cfg, 512, &inp, &[]), &want) < TOL_F32);
    // The in-order schedule hides this bug (documented limitation) ...
    assert!(rel_err(&run_simple(&ordered, "planted_neighbor_diff_nobarrier", cfg, 512, &inp, &[]), &want) < TOL_F32);
    // ... race mode exposes it.
    let racy = SimLauncher::racy(6).without_racecheck();
    assert!(rel_err(&run_simple(&racy, "planted_neighbor_diff_ok", cfg, 512, &inp, &[]), &want) < TOL_F32);
    let bad = rel_err(&run_simple(&racy, "planted_neighbor_diff_nobarrier", cfg, 512, &inp, &[]), &want);
    assert!(bad > TOL_F32, "race mode missed the missing barrier: error {bad:e}");
}

#[test]
fn planted_off_by_one_is_caught() {
    let l = launcher();
    let n = 100usize;
    let inp: Vec<f32> = (0..n + 1).map(|i| i as f32).collect(); // one readable element past n
                                                                // compare n elements plus one guard element that must stay 0
    let mut want: Vec<f64> = (0..n).map(|i| 2.0 * i as f64).collect();
    want.push(0.0);
    let cfg = LaunchConfig::linear(n + 1, 64);
    let ok = run_simple(&l, "planted_scale2_ok", cfg, n + 1, &inp, &[Arg::I32(n as i32)]);
    assert_eq!(ok, want);
    let bad = run_simple(&l, "planted_scale2_offbyone", cfg, n + 1, &inp, &[Arg::I32(n as i32)]);
    assert_ne!(bad, want, "off-by-one bound not caught");
    assert!(rel_err(&bad, &want) > TOL_F32);
}

#[test]
fn planted_wrong_shuffle_offset_is_caught() {
    let l = launcher();
    let mut rng = Rng::new(52);
    let inp: Vec<f32> = (0..96).map(|_| rng.normal() as f32).collect();
    let want: Vec<f64> = inp.chunks(32).map(|c| c.iter().map(|&v| v as f64).sum()).collect();
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [96, 1, 1], smem: 0 };
    assert!(rel_err(&run_simple(&l, "planted_warp_sum_ok", cfg, 3, &inp, &[]), &want) < TOL_F32);
    let bad = rel_err(&run_simple(&l, "planted_warp_sum_badoffset", cfg, 3, &inp, &[]), &want);
    assert!(bad > TOL_F32, "wrong shuffle offset not caught: {bad:e}");
}

#[test]
fn planted_divergent_barrier_reports_deadlock() {
    let out = SimBuf::<f32>::zeros(64);
    let x = SimBuf::<f32>::zeros(64);
    // SAFETY: the kernel reads and writes 64 floats of x and out.
    let e = unsafe {
        launcher().launch(
            "planted_divergent_barrier",
            LaunchConfig { grid: [1, 1, 1], block: [64, 1, 1], smem: 0 },
            &[Arg::Ptr(out.ptr()), Arg::Ptr(x.ptr())],
        )
    }
    .unwrap_err();
    assert!(e.to_string().contains("deadlock"), "{e}");
}

#[test]
fn early_exit_threads_leave_the_barrier() {
    // 256-thread block, only the first 100 continue past the early return: the barrier must not wait for the rest.
    let n = 100usize;
    let inp: Vec<f32> = (0..256).map(|i| i as f32).collect();
    let want: Vec<f64> = (0..256).map(|t| if t < n { ((t + 1) % n) as f64 } else { 0.0 }).collect();
    for l in [SimLauncher::ordered(), SimLauncher::racy(9)] {
        let got = run_simple(
            &l,
            "planted_early_exit_ok",
            LaunchConfig { grid: [1, 1, 1], block: [256, 1, 1], smem: 0 },
            256,
            &inp,
            &[Arg::I32(n as i32)],
        );
        assert_eq!(got, want);
    }
}

// ------------------------------------------------------------------------------------------------ race checker

/// The launch error of `kernel` (out, inp, extra...) under `l`, which must fail.
fn launch_err(l: &SimLauncher, kernel: &str, cfg: LaunchConfig, out_len: usize, inp: &[f32], extra: &[Arg]) -> String {
    let out = SimBuf::<f32>::zeros(out_len);
    let x = SimBuf::from_slice(inp);
    let mut args = vec![Arg::Ptr(out.ptr()), Arg::Ptr(x.ptr())];
    args.extend_from_slice(extra);
    // SAFETY: as in run_simple.
    match unsafe { l.launch(kernel, cfg, &args) } {
        Ok(()) => panic!("{kernel}: no hazard reported ({l:?})"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn planted_races_are_reported() {
    let inp: Vec<f32> = (0..4 * 256).map(|i| (i % 7) as f32).collect();
    let blk = |n: u32| LaunchConfig { grid: [1, 1, 1], block: [n, 1, 1], smem: 0 };
    for l in [SimLauncher::ordered().with_racecheck(), SimLauncher::racy(3).with_racecheck()] {
        // Every hazard names the kernel, its kind, the memory, both threads and both source lines.
        let e = launch_err(&l, "planted_tree_sum_nobarrier", blk(256), 4, &inp, &[]);
        assert!(e.contains("race hazard in planted_tree_sum_nobarrier"), "{e}");
        assert!(e.contains("static __shared__"), "{e}");
        assert!(e.contains("planted_bugs.cu:"), "no source line: {e}");
        assert!(e.contains("s[t] += s[t + h]"), "no source text: {e}");
        // The race the in-order schedule hides from the numbers (planted_missing_barrier_needs_race_mode).
        let e = launch_err(&l, "planted_neighbor_diff_nobarrier", blk(256), 256, &inp, &[]);
        assert!(e.contains("read-after-write") || e.contains("write-after-read"), "{e}");
        let e = launch_err(&l, "planted_shared_waw", blk(64), 64, &inp, &[]);
        assert!(e.contains("write-after-write"), "{e}");
        assert!(e.contains("thread (0,0,0)") && e.contains("thread (32,0,0)"), "{e}");
        let e = launch_err(&l, "planted_warp_nosyncwarp", blk(32), 32, &inp, &[]);
        assert!(e.contains("or warp barrier"), "{e}");
        let e = launch_err(&l, "planted_key_tiles_notopbarrier", blk(128), 128, &inp, &[Arg::I32(3)]);
        // Which side of the race is met first depends on the schedule: the next tile's store after another
        // warp's read (write-after-read), or that read after the store (read-after-write). Both name the store.
        let kind = e.contains("write-after-read") || e.contains("read-after-write");
        assert!(kind && e.contains("::Ks") && e.contains("Ks[t] = inp[k * 64 + t]"), "{e}");
        // The correct twins pass, atomics are exempt.
        for (k, n, extra) in [
            ("planted_tree_sum_ok", 256, vec![]),
            ("planted_neighbor_diff_ok", 256, vec![]),
            ("planted_warp_syncwarp_ok", 32, vec![]),
            ("planted_shared_atomic_ok", 64, vec![]),
            ("planted_key_tiles_ok", 128, vec![Arg::I32(3)]),
        ] {
            run_simple(&l, k, blk(n), n as usize, &inp, &extra);
        }
    }
}

#[test]
fn race_checker_off_runs_planted_races() {
    let inp: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [64, 1, 1], smem: 0 };
    run_simple(&SimLauncher::ordered().without_racecheck(), "planted_shared_waw", cfg, 64, &inp, &[]);
}

/// The planted bug of issue 18 in small: without the barrier at the top of the key-tile loop, a warp that
/// runs ahead (race mode) overwrites the tile others still read, so the numbers go wrong too, not only the
/// hazard report.
#[test]
fn run_ahead_warps_expose_the_missing_top_barrier() {
    let ntiles = 4usize;
    let mut rng = Rng::new(53);
    let inp: Vec<f32> = (0..ntiles * 64).map(|_| rng.normal() as f32).collect();
    let total: f64 = inp.iter().map(|&v| v as f64).sum();
    let want: Vec<f64> = (0..128).map(|t| total * ((t / 32) + 1) as f64).collect();
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [128, 1, 1], smem: 0 };
    let n = [Arg::I32(ntiles as i32)];
    let ordered = SimLauncher::ordered().without_racecheck();
    assert!(rel_err(&run_simple(&ordered, "planted_key_tiles_ok", cfg, 128, &inp, &n), &want) < TOL_F32);
    let mut caught = 0;
    for seed in 1..=3 {
        let racy = SimLauncher::racy(seed).without_racecheck();
        assert!(rel_err(&run_simple(&racy, "planted_key_tiles_ok", cfg, 128, &inp, &n), &want) < TOL_F32);
        if rel_err(&run_simple(&racy, "planted_key_tiles_notopbarrier", cfg, 128, &inp, &n), &want) > TOL_F32 {
            caught += 1;
        }
    }
    assert!(caught > 0, "no seed of race mode made the missing top-of-loop barrier give wrong numbers");
}
