//! The model code driving the CUDA kernels end to end: `SimBackend` (every op through the launch layer in
//! the simulator; matmuls on the CPU) against the CPU engine on the parity fixtures' models (GPT-2 at head
//! sizes 16 and 16..64; Llama, Qwen2 and Mistral with grouped kv heads, RoPE, RMSNorm and SwiGLU at head
//! sizes 16 and 12; ragged vocabularies): logits, loss, every parameter gradient, sampling with a KV cache
//! of two prompts of different lengths, and an AdamW step with gradient clipping through the sum-of-squares
//! kernel.
//!
//! Tolerance: 1e-4 of each tensor's largest entry, as tests/parity.rs against PyTorch, for the same reasons
//! (f32 on both sides, different summation orders; a wrong formula or launch gives 1e-2..1).

use rlhf::backend::{Backend, Cpu};
use rlhf::checkpoint;
use rlhf::kernels::SimBackend;
use rlhf::model::sample::{generate, SampleConfig};
use rlhf::model::{decoder::tensors_to_host, Acts, Decoder, Tensors};
use rlhf::ops::adamw::AdamWParams;
use rlhf::util::rng::Rng;
use std::path::Path;

mod common;

const TOL: f32 = 1e-4;

fn scaled_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| if x.is_finite() { m.max((x - y).abs()) } else { f32::INFINITY }) / scale
}

struct Run {
    logits: Vec<f32>,
    loss: f64,
    grads: Vec<Vec<f32>>,
    norm2: f64,
    stepped: Vec<f32>,
    greedy: Vec<Vec<u32>>,
}

fn run<B: Backend<F = f32>>(be: &B, dir: &Path, tokens: &[u32], targets: &[u32], b: usize, t: usize) -> Run {
    let ck = checkpoint::load(dir).unwrap();
    let cfg = ck.config;
    let host: Vec<Vec<f32>> = ck.tensors.iter().map(|x| x.data.clone()).collect();
    let m = Decoder::from_host(be, cfg, &host).unwrap();
    let mut a = Acts::new(be, &cfg, b, t).unwrap();
    m.forward(be, &mut a, tokens, None, None).unwrap();
    m.logits(be, &mut a);
    let logits = be.download(&a.logits);
    let n = b * t;
    let weights: Vec<f32> = (0..n).map(|i| if i % 5 == 4 { 0.0 } else { 1.0 / n as f32 }).collect();
    let mut g = Tensors::zeros(be, &cfg).unwrap();
    let loss = m.lm_loss(be, &mut a, targets, &weights, 0.8, Some(&mut g)).unwrap();
    m.backward(be, &mut a, &mut g);
    let grads: Vec<Vec<f32>> = tensors_to_host(be, &cfg, &g).into_iter().map(|(_, v)| v).collect();

    // global norm over the first gradient tensor, then one AdamW step of that tensor with clipping
    let gbuf = be.upload(&grads[0]).unwrap();
    let norm2 = be.sum_squares(&gbuf);
    let mut param = be.upload(&host[0]).unwrap();
    let (mut mm, mut vv) = (be.zeros(host[0].len()).unwrap(), be.zeros(host[0].len()).unwrap());
    let h = AdamWParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 1,
        grad_scale: (0.5 / norm2.sqrt()).min(1.0),
    };
    be.adamw(&mut param, &gbuf, &mut mm, &mut vv, &h);
    let stepped = be.download(&param);

    let prompts = vec![tokens[..5].to_vec(), tokens[t..t + 9].to_vec()];
    let sc = SampleConfig { max_new_tokens: 6, temperature: 0.0, top_k: 0, top_p: 1.0, stop: None };
    let greedy = generate(be, &m, &prompts, &sc, &mut [Rng::new(0)]).unwrap().into_iter().map(|g| g.tokens).collect();
    Run { logits, loss, grads, norm2, stepped, greedy }
}

/// `run` on `be` and on the CPU engine for every parity fixture (GPT-2, then Llama, Qwen2 and Mistral), with
/// the same batch: (name, got, want).
fn fixture_runs<B: Backend<F = f32>>(be: &B) -> Vec<(String, Run, Run)> {
    let mut dirs = vec![];
    for set in ["parity", "parity_modern"] {
        let root = common::fixtures().join(set);
        let mut found: Vec<_> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{} (set RLHF_FIXTURES to the tests/fixtures folder): {e}", root.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert!(!found.is_empty(), "no fixtures in {}", root.display());
        found.sort();
        dirs.extend(found);
    }
    let cpu = Cpu::<f32>::new();
    dirs.iter()
        .map(|dir| {
            let cfg = checkpoint::load(dir).unwrap().config;
            let (b, t) = (2usize, 13usize.min(cfg.n_positions));
            let mut rng = Rng::new(3);
            let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
            let targets: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
            let want = run(&cpu, dir, &tokens, &targets, b, t);
            let got = run(be, dir, &tokens, &targets, b, t);
            (dir.file_name().unwrap().to_string_lossy().to_string(), got, want)
        })
        .collect()
}

/// Logits, loss and every gradient within `tol` of scale (the loss within `loss_tol` relative).
fn assert_close(name: &str, got: &Run, want: &Run, tol: f32, loss_tol: f64) {
    let e = scaled_err(&got.logits, &want.logits);
    println!(
        "{name}: logits {e:.2e}, loss {} vs {}, greedy {:?} vs {:?}",
        got.loss, want.loss, got.greedy, want.greedy
    );
    assert!(e <= tol, "{name}: logits differ by {e:.3e}");
    assert!(((got.loss - want.loss) / want.loss).abs() <= loss_tol, "{name}: loss {} vs {}", got.loss, want.loss);
    for (i, (gg, wg)) in got.grads.iter().zip(&want.grads).enumerate() {
        let e = scaled_err(gg, wg);
        assert!(e <= tol, "{name}: gradient {i} differs by {e:.3e}");
    }
}

#[test]
fn model_through_simulated_kernels_matches_cpu_engine() {
    for (name, got, want) in fixture_runs(&SimBackend::new()) {
        assert_close(&name, &got, &want, TOL, TOL as f64);
        assert!(
            ((got.norm2 - want.norm2) / want.norm2).abs() < 1e-6,
            "{name}: sum of squares {} vs {}",
            got.norm2,
            want.norm2
        );
        let e = scaled_err(&got.stepped, &want.stepped);
        assert!(e <= 1e-5, "{name}: AdamW step differs by {e:.3e}");
        assert_eq!(got.greedy, want.greedy, "{name}: greedy continuations");
    }
}

/// The same model-level comparison on a GPU through `CudaBackend`, in f32 (true f32 GEMMs; the GPU's fast
/// exp and different summation orders: 1e-3 of scale) and in mixed bf16 (5e-2 of scale for logits and
/// gradients, 1e-2 for the loss: see src/check/kernels.rs for the bf16 budget). Greedy continuations are
/// printed, not compared: near-ties may flip. Prints why it did not run where there is no GPU.
#[test]
fn model_through_cuda_backend_matches_cpu_engine() {
    use rlhf::kernels::{CudaBackend, DType};
    for (dt, tol, loss_tol) in [(DType::F32, 1e-3f32, 1e-4f64), (DType::BF16, 5e-2, 1e-2)] {
        let be = match CudaBackend::cuda(0, dt) {
            Ok(be) => be,
            Err(e) => {
                println!("CudaBackend model check did not run here: {e}");
                return;
            }
        };
        for (name, got, want) in fixture_runs(&be) {
            assert_close(&format!("{name} on {}", be.name()), &got, &want, tol, loss_tol);
        }
    }
}

/// `rlhf gradcheck --device cuda-sim`: every kernel op and one training step, f32 and mixed bf16, against
/// the CPU engine within the tolerances documented in src/check/kernels.rs.
#[test]
fn kernel_check_passes_in_both_precisions() {
    for be in [SimBackend::new(), SimBackend::mixed()] {
        let rows = rlhf::check::kernels::run(&be, 1234, |_| {});
        print!("{}", rlhf::check::format_table(&rows));
        assert!(rows.len() >= 31, "every op and the training step are checked");
        assert!(rows.iter().any(|r| r.op.contains("scalar head backward (oc = 1)")), "the n = 1 / k = 1 products");
        let failed: Vec<_> = rows.iter().filter(|r| !r.ok).map(|r| r.op.clone()).collect();
        assert!(failed.is_empty(), "failed: {failed:?}");
    }
}

/// The mixed-precision backend keeps what mixed precision promises: activations and gradients in bf16,
/// logits, statistics and master weights in f32, and a training step that learns.
#[test]
fn mixed_precision_storage_and_learning() {
    use rlhf::kernels::DType;
    use rlhf::model::{AdamW, AdamWConfig, Config};
    let be = SimBackend::mixed();
    let cfg = Config::gpt2(1, 2, 128, 40, 16);
    let (b, t) = (2, 8);
    let mut m = Decoder::init(&be, cfg, 5).unwrap();
    let mut a = Acts::new(&be, &cfg, b, t).unwrap();
    let mut g = Tensors::zeros(&be, &cfg).unwrap();
    let mut opt = AdamW::new(&be, &cfg, AdamWConfig::default()).unwrap();
    let tokens: Vec<u32> = (0..b * t).map(|i| (i * 7 % 40) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 3 % 40) as u32).collect();
    let w = vec![1.0 / (b * t) as f32; b * t];
    let mut losses = Vec::new();
    for _ in 0..8 {
        g.fill_zero(&be);
        m.forward(&be, &mut a, &tokens, None, None).unwrap();
        losses.push(m.lm_loss(&be, &mut a, &targets, &w, 1.0, Some(&mut g)).unwrap());
        m.backward(&be, &mut a, &mut g);
        opt.update(&be, &mut m.params, &g, 3e-3);
    }
    assert!(g.bufs.iter().all(|x| x.dtype() == DType::BF16), "parameter gradients are bf16");
    assert!(m.params.bufs.iter().all(|x| x.dtype() == DType::F32), "parameters are f32 master weights");
    assert!(opt.m.bufs.iter().chain(&opt.v.bufs).all(|x| x.dtype() == DType::F32), "AdamW moments are f32");
    assert_eq!(a.lnf.dtype(), DType::BF16, "activations are bf16");
    assert_eq!(a.logits.dtype(), DType::F32, "logits are f32 (from bf16 inputs)");
    assert_eq!(a.losses.dtype(), DType::F32, "losses are f32");
    println!("mixed-precision losses: {losses:?}");
    assert!(losses[7] < losses[0] - 0.5, "the loss falls: {losses:?}");
}

/// AdamW over a whole parameter list (one chunk table, tensors cut into 65536-element chunks, weight decay per
/// tensor) gives the same bits as stepping each tensor on its own, in f32 and in mixed precision; the
/// multi-tensor sum of squares matches the host's.
#[test]
fn multi_tensor_adamw_and_norm_match_per_tensor() {
    let sizes = [150_000usize, 7, 65_536, 1000];
    for be in [SimBackend::new(), SimBackend::mixed()] {
        let mut rng = Rng::new(9);
        let host: Vec<[Vec<f32>; 4]> = sizes
            .iter()
            .map(|&n| {
                let mut r = |s: f64| (0..n).map(|_| (rng.normal() * s) as f32).collect::<Vec<f32>>();
                [r(1.0), r(0.5), r(0.1), r(0.1).iter().map(|x| x * x).collect()]
            })
            .collect();
        let hs: Vec<AdamWParams> = (0..sizes.len())
            .map(|i| AdamWParams {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: if i % 2 == 0 { 0.1 } else { 0.0 },
                step: 4,
                grad_scale: 0.7,
            })
            .collect();
        let grads: Vec<_> = host
            .iter()
            .map(|t| {
                let (src, mut g) = (be.upload(&t[1]).unwrap(), be.zeros(t[1].len()).unwrap());
                be.copy(&mut g, 0, &src, 0, t[1].len());
                g
            })
            .collect();
        let state = |k: usize| host.iter().map(|t| be.upload(&t[k]).unwrap()).collect::<Vec<_>>();
        let (mut p1, mut m1, mut v1) = (state(0), state(2), state(3));
        be.adamw_all(&mut p1, &grads, &mut m1, &mut v1, &hs);
        let (mut p2, mut m2, mut v2) = (state(0), state(2), state(3));
        for i in 0..sizes.len() {
            be.adamw(&mut p2[i], &grads[i], &mut m2[i], &mut v2[i], &hs[i]);
        }
        for i in 0..sizes.len() {
            assert_eq!(be.download(&p1[i]), be.download(&p2[i]), "{}: params of tensor {i}", be.name());
            assert_eq!(be.download(&m1[i]), be.download(&m2[i]), "{}: m of tensor {i}", be.name());
            assert_eq!(be.download(&v1[i]), be.download(&v2[i]), "{}: v of tensor {i}", be.name());
        }
        let want: f64 = grads.iter().flat_map(|g| be.download(g)).map(|x| x as f64 * x as f64).sum();
        let got = be.sum_squares_all(&grads);
        assert!(((got - want) / want).abs() < 1e-12, "{}: sum of squares {got} vs {want}", be.name());
    }
}

/// The simulator, except that every product with one output column fails (as a GEMM with no usable
/// algorithm or a faulting device would): for the check harness's handling of a failing group.
#[derive(Default)]
struct NoScalarGemm(rlhf::kernels::device::SimDevice);

impl rlhf::kernels::device::Device for NoScalarGemm {
    type Mem = <rlhf::kernels::device::SimDevice as rlhf::kernels::device::Device>::Mem;
    fn name(&self) -> String {
        self.0.name()
    }
    fn launcher(&self) -> &dyn rlhf::kernels::Launcher {
        self.0.launcher()
    }
    fn alloc(&self, bytes: usize) -> anyhow::Result<Self::Mem> {
        self.0.alloc(bytes)
    }
    fn ptr(&self, m: &Self::Mem) -> rlhf::kernels::DevPtr {
        self.0.ptr(m)
    }
    // SAFETY (all below): the trait's contracts, passed on to the simulator.
    unsafe fn htod(&self, dst: rlhf::kernels::DevPtr, src: &[u8]) -> anyhow::Result<()> {
        unsafe { self.0.htod(dst, src) }
    }
    unsafe fn dtoh(&self, dst: &mut [u8], src: rlhf::kernels::DevPtr) -> anyhow::Result<()> {
        unsafe { self.0.dtoh(dst, src) }
    }
    unsafe fn dtod(&self, dst: rlhf::kernels::DevPtr, src: rlhf::kernels::DevPtr, bytes: usize) -> anyhow::Result<()> {
        unsafe { self.0.dtod(dst, src, bytes) }
    }
    unsafe fn memset0(&self, dst: rlhf::kernels::DevPtr, bytes: usize) -> anyhow::Result<()> {
        unsafe { self.0.memset0(dst, bytes) }
    }
    unsafe fn gemm(&self, g: &rlhf::kernels::device::Gemm) -> anyhow::Result<()> {
        anyhow::ensure!(g.n != 1, "planted failure: GEMM {} x 1 x {}", g.m, g.k);
        unsafe { self.0.gemm(g) }
    }
    fn synchronize(&self) -> anyhow::Result<()> {
        self.0.synchronize()
    }
}

/// A group of `gradcheck --device cuda` whose op panics (here: the scalar head's products fail) is one failed
/// row naming the group and the error; the groups after it still run and pass.
#[test]
fn kernel_check_reports_a_failing_group_and_runs_the_rest() {
    let be = rlhf::kernels::KernelBackend::with_device(NoScalarGemm::default(), rlhf::kernels::DType::F32);
    let mut streamed = Vec::new();
    let rows = rlhf::check::kernels::run(&be, 1234, |r| streamed.push(r.op.clone()));
    assert_eq!(streamed, rows.iter().map(|r| r.op.clone()).collect::<Vec<_>>(), "every row is passed on as it is made");
    let failed: Vec<&str> = rows.iter().filter(|r| !r.ok).map(|r| r.op.as_str()).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("f32 scalar head: panicked:") && failed[0].contains("planted failure"), "{failed:?}");
    assert!(rows.iter().any(|r| r.op.starts_with("f32 train step: every gradient") && r.ok), "later groups ran");
}

/// Grouped-query attention through `KernelBackend` (NH 4 over NKV 2, head size 16) against the CPU engine:
/// the forward in training form, a decode step (Tq = 1) at ragged positions of a longer KV cache, and the
/// backward, whose dk, dv sum over each kv head's query heads.
#[test]
fn kernel_attention_grouped_kv_heads_matches_cpu() {
    // (B, T, NH, NKV, HS, Tk): f32 on the CUDA-core kernels; bf16 at head size 64 on the tensor-core ones
    // (tolerance 3e-2 of scale, the bf16 attention budget of src/check/kernels.rs).
    type Shape = (usize, usize, usize, usize, usize, usize);
    let cases: [(Shape, SimBackend, f32); 2] =
        [((2, 19, 4, 2, 16, 40), SimBackend::new(), TOL), ((1, 18, 4, 2, 64, 24), SimBackend::mixed(), 3e-2)];
    for (shape, be, tol) in cases {
        grouped_case(shape, &be, tol);
    }
}

fn grouped_case(shape: (usize, usize, usize, usize, usize, usize), sim: &SimBackend, tol: f32) {
    let (b, t, nh, nkv, hs, tk) = shape;
    let (c, w) = (nh * hs, (nh + 2 * nkv) * hs);
    let mut rng = Rng::new(7);
    let mut randn = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
    let (qkv, dout, q1, cache) = (randn(b * t * w), randn(b * t * c), randn(b * w), randn(b * tk * w));
    fn run_on<B: Backend<F = f32>>(
        be: &B,
        shape: (usize, usize, usize, usize, usize, usize),
        qkv: &[f32],
        dout: &[f32],
        q1: &[f32],
        cache: &[f32],
    ) -> Vec<Vec<f32>> {
        let (b, t, nh, nkv, hs, tk) = shape;
        let c = nh * hs;
        let pos: Vec<u32> = (0..b as u32).map(|i| [11, tk as u32 - 1][i as usize % 2]).collect();
        let (x, d) = (be.upload(qkv).unwrap(), be.upload(dout).unwrap());
        let (mut out, mut lse) = (be.zeros(b * t * c).unwrap(), be.zeros(b * nh * t).unwrap());
        be.attention_forward(&mut out, &mut lse, &x, &x, &vec![0; b], b, t, t, c, nh, nkv);
        let mut dqkv = be.zeros(qkv.len()).unwrap();
        be.attention_backward(&mut dqkv, &d, &x, &out, &lse, b, t, c, nh, nkv);
        let (q, kv) = (be.upload(q1).unwrap(), be.upload(cache).unwrap());
        let (mut o1, mut l1) = (be.zeros(b * c).unwrap(), be.zeros(b * nh).unwrap());
        be.attention_forward(&mut o1, &mut l1, &q, &kv, &pos, b, 1, tk, c, nh, nkv);
        [&out, &lse, &dqkv, &o1, &l1].iter().map(|x| be.download(x)).collect()
    }
    let got = run_on(sim, shape, &qkv, &dout, &q1, &cache);
    let want = run_on(&Cpu::<f32>::new(), shape, &qkv, &dout, &q1, &cache);
    for (i, what) in ["out", "lse", "dqkv", "decode out", "decode lse"].iter().enumerate() {
        let e = scaled_err(&got[i], &want[i]);
        assert!(e < tol, "grouped-query attention {what} ({}, HS {hs}): error {e:.3e}", sim.name());
    }
}

/// A constant the kernel backend keeps on the device (a rope table, positions, a row table) stays valid while
/// the op that asked for it runs: a rope whose table is the oldest of a full cache, and whose positions are
/// not cached yet, rotates as the CPU engine does. (Uploading the positions once evicted the table just
/// returned; the freed memory then held the positions, and a decode step of the Llama fixture went NaN.)
#[test]
fn cached_constants_outlive_the_op_that_uses_them() {
    use rlhf::ops::rope::Rope;
    let (sim, cpu) = (SimBackend::new(), Cpu::<f32>::new());
    let rope = Rope::new(10_000.0, 16, None);
    let (t, nh, nkv) = (3, 2, 1);
    let x: Vec<f32> = (0..t * (nh + 2 * nkv) * 16).map(|i| (i as f32 * 0.37).sin()).collect();
    let rotate = |pos: u32| {
        let mut a = sim.upload(&x).unwrap();
        sim.rope_forward(&mut a, &rope, &[pos], 1, t, nh, nkv);
        sim.download(&a)
    };
    rotate(0); // caches the table (now the oldest entry) and the positions [0]
    let (mut dst, src) = (sim.zeros(1).unwrap(), sim.upload(&[0.5f32; 32]).unwrap());
    for k in 0..14 {
        sim.copy_rows(&mut dst, &src, 1, &[(0, k)]); // fills the cache with 14 distinct row tables
    }
    let got = rotate(5);
    let mut want = cpu.upload(&x).unwrap();
    cpu.rope_forward(&mut want, &rope, &[5], 1, t, nh, nkv);
    let e = scaled_err(&got, &want);
    assert!(e < TOL, "rope with a table at the end of the constant cache: error {e:.3e}");
}
