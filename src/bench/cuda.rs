//! `rlhf bench --device cuda`: the kernels against the machine's own ceilings, measured in the same run.
//!
//! - Ceilings: copy bandwidth (a device-to-device copy: bytes read + written per second) and the bf16
//!   tensor-core rate (one large cuBLASLt product).
//! - Memory-bound kernels (bf16, GPT-2 124M shapes at B x T): GB/s from the bytes each must move at least
//!   (every input read once, every output written once), and that as a fraction of the copy ceiling.
//! - Attention (B x NH x T x 64, causal): the fused kernels' TFLOP/s, and the forward against the unfused
//!   route through cuBLAS (permute, Q K^T, causal softmax, P V, unpermute). FLOPs count only the causal
//!   half: forward 2 B NH T^2 hs (two products of 2 T^2 hs, halved), forward + backward 3.5x that.
//! - The whole training step (mixed precision) in tokens/s and MFU: 6N + 6LCT FLOPs per token over the
//!   GPU's bf16 dense peak where the GPU is known, else over the measured GEMM ceiling.
//!
//! With `RLHF_CUDA_PROFILE=1`, a last section times every kernel and product over a few training steps
//! (`crate::kernels::profile`), printed as a table at the end.
//!
//! Each section is reported as it finishes ([`Section`]; `rlhf bench --sections FILE` writes them as JSON
//! lines), and one that fails is recorded with its error while the others still run.
//!
//! Written over [`Device`], so the same code runs in the simulator (tiny shapes, meaningless times) in tests.
//!
//! Every device pointer passed to an `unsafe` launch or copy here comes from an allocation of this module
//! (`dev.alloc` or `rand`) that lives to the end of the function, sized for the shapes passed with it;
//! the `// SAFETY:` comments say which sizes.

use crate::kernels::device::{Device, Gemm};
use crate::kernels::engine::KernelBackend;
use crate::kernels::launch::{self as kl, DType, DevPtr};
use crate::kernels::profile::{self, ProfileRow};
use crate::model::Config;
use crate::ops::adamw::AdamWParams;
use crate::util::guard;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// Training steps recorded for the per-kernel profile.
const PROFILE_STEPS: usize = 3;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchSizes {
    /// Model whose shapes the kernels run at and whose training step is timed.
    pub preset: String,
    pub vocab: usize,
    /// Rows (B x T) of the memory-bound kernels: batch, seq.
    pub batch: usize,
    pub seq: usize,
    /// Training steps to time: (batch, seq).
    pub steps: Vec<(usize, usize)>,
    pub copy_bytes: usize,
    pub gemm_dim: usize,
    /// Timed repetitions per kernel (after one warm-up).
    pub iters: usize,
    pub warmup_steps: usize,
    pub train_steps: usize,
}

impl BenchSizes {
    /// GPT-2 124M at 8 x 1024 (the shapes), training steps at 8 and 16 x 1024.
    pub fn gpu() -> Self {
        BenchSizes {
            preset: "gpt2".into(),
            vocab: Config::GPT2_VOCAB,
            batch: 8,
            seq: 1024,
            steps: vec![(8, 1024), (16, 1024)],
            copy_bytes: 1 << 30,
            gemm_dim: 8192,
            iters: 20,
            warmup_steps: 2,
            train_steps: 10,
        }
    }
    /// These sizes for `preset` (`vocab` ids), the sequences cut to its context.
    pub fn at(self, preset: &str, vocab: usize, cfg: &Config) -> Self {
        let ctx = cfg.n_positions;
        BenchSizes {
            preset: preset.into(),
            vocab,
            seq: self.seq.min(ctx),
            steps: self.steps.iter().map(|&(b, t)| (b, t.min(ctx))).collect(),
            ..self
        }
    }

    /// Tiny shapes for the simulator: checks the code path, not the speed.
    pub fn smoke() -> Self {
        BenchSizes {
            preset: "tiny".into(),
            vocab: 300,
            batch: 1,
            seq: 64,
            steps: vec![(1, 32)],
            copy_bytes: 1 << 16,
            gemm_dim: 64,
            iters: 1,
            warmup_steps: 0,
            train_steps: 1,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    pub copy_gbps: f64,
    pub gemm_bf16_tflops: f64,
    pub gemm_shape: String,
}

#[derive(Debug, Serialize)]
pub struct KernelRow {
    pub name: String,
    pub dtype: String,
    pub shape: String,
    pub ms: f64,
    pub bytes: u64,
    pub gbps: f64,
    pub frac_copy: f64,
}

#[derive(Debug, Serialize)]
pub struct AttentionRow {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    /// Key/value heads (fewer than `nh`: grouped-query attention, where the unfused route is not run).
    pub nkv: usize,
    pub hs: usize,
    pub fused_fwd_ms: f64,
    pub fused_fwd_bwd_ms: f64,
    pub unfused_fwd_ms: f64,
    pub fused_fwd_tflops: f64,
    pub fused_fwd_bwd_tflops: f64,
    pub speedup_fwd_vs_unfused: f64,
    /// max|unfused - fused| / max|fused| over the outputs: both routes compute the same attention.
    pub unfused_vs_fused_err: f64,
}

/// One decode step's attention: a query row per batch row against a KV cache of `tk` positions, by the decode
/// kernel and by the training kernel (which computes one row of a 64-row query tile there).
#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub b: usize,
    pub tk: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
    pub decode_ms: f64,
    pub fused_ms: f64,
    /// The decode kernel's reads of the cache's keys and values, in GB/s.
    pub decode_gbps: f64,
    pub speedup_vs_fused: f64,
    /// max|fused - decode| / max|fused|.
    pub decode_vs_fused_err: f64,
}

#[derive(Debug, Serialize)]
pub struct StepRow {
    pub batch: usize,
    pub seq: usize,
    pub median_ms: f64,
    pub tokens_per_s: f64,
    pub tflops: f64,
    /// Over the datasheet bf16 dense peak (`peak_tflops`), or the measured GEMM ceiling when unknown.
    pub mfu: f64,
    pub peak_tflops: f64,
    pub loss_first: f64,
    pub loss_last: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    /// None when that section failed (see `failed`).
    pub ceilings: Option<Ceilings>,
    pub kernels: Vec<KernelRow>,
    pub attention: Vec<AttentionRow>,
    pub decode: Vec<DecodeRow>,
    pub train_step: Vec<StepRow>,
    /// With `RLHF_CUDA_PROFILE=1`: time per kernel over a few training steps (see `crate::kernels::profile`).
    pub profile: Vec<ProfileRow>,
    /// The sections that failed, with their errors; the others ran regardless.
    pub failed: Vec<Section>,
}

/// One section of the report as it finished: its result as JSON, or the error (or panic) that stopped it.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    pub section: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// Runs the sections one by one, each reported to `on_section` as it finishes.
struct Sections<'a, P: Fn(&str), S: FnMut(&Section)> {
    progress: &'a P,
    on_section: S,
    failed: Vec<Section>,
}

impl<P: Fn(&str), S: FnMut(&Section)> Sections<'_, P, S> {
    /// `f()`'s value, or None when it failed or panicked (recorded as failed).
    fn run<T: Serialize>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Option<T> {
        (self.progress)(name);
        let r = guard::catch(f);
        let sec = match &r {
            Ok(v) => Section { section: name.into(), ok: true, error: None, result: serde_json::to_value(v).ok() },
            Err(e) => Section { section: name.into(), ok: false, error: Some(format!("{e:#}")), result: None },
        };
        (self.on_section)(&sec);
        if !sec.ok {
            (self.progress)(&format!("{name}: FAILED: {}", sec.error.as_deref().unwrap_or("")));
            self.failed.push(sec);
        }
        r.ok()
    }
}

/// Published bf16 dense tensor-core peaks (TFLOP/s) of the GPUs this is run on, by name.
fn datasheet_peak(name: &str) -> Option<f64> {
    [("H200", 989.4), ("H100 SXM", 989.4), ("H100 80GB HBM3", 989.4), ("H100 PCIe", 756.0), ("A100", 312.0)]
        .iter()
        .find(|(k, _)| name.contains(k))
        .map(|&(_, v)| v)
}

/// Mean seconds per call of `f` over `iters` calls after one warm-up call; `f` gets the call's index
/// (kernels whose data would fit in L2 rotate over several slices with it, so every call reads DRAM).
fn time<D: Device>(dev: &D, iters: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    f(iters)?;
    dev.synchronize()?;
    let t0 = Instant::now();
    for i in 0..iters {
        f(i)?;
    }
    dev.synchronize()?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

/// Device memory filled with small random values of type `dt` (so no kernel sees NaN or overflow).
struct Rand<M> {
    _mem: M,
    ptr: DevPtr,
}

fn rand<D: Device>(dev: &D, n: usize, dt: DType, seed: u64) -> Result<Rand<D::Mem>> {
    let mut rng = crate::util::rng::Rng::new(seed);
    let host: Vec<f32> = (0..n).map(|_| (rng.uniform() as f32 - 0.5) * 0.5).collect();
    let mem = dev.alloc(n * dt.size())?;
    let ptr = dev.ptr(&mem);
    let bytes: Vec<u8> = match dt {
        DType::F32 => bytemuck::cast_slice(&host).to_vec(),
        DType::BF16 => {
            bytemuck::cast_slice(&host.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>()).to_vec()
        }
    };
    // SAFETY: `mem` was just allocated with n elements of dt, the length of `bytes`.
    unsafe { dev.htod(ptr, &bytes)? };
    Ok(Rand { _mem: mem, ptr })
}

/// # Safety
/// `p` must address `n` bf16 of `dev`'s memory.
unsafe fn download_bf16<D: Device>(dev: &D, p: DevPtr, n: usize) -> Result<Vec<f32>> {
    let mut h = vec![half::bf16::ZERO; n];
    dev.dtoh(bytemuck::cast_slice_mut(&mut h), p)?;
    Ok(h.iter().map(|x| x.to_f32()).collect())
}

fn ceilings<D: Device>(dev: &D, s: &BenchSizes) -> Result<Ceilings> {
    let (src, dst) = (dev.alloc(s.copy_bytes)?, dev.alloc(s.copy_bytes)?);
    let (ps, pd) = (dev.ptr(&src), dev.ptr(&dst));
    // SAFETY: src and dst hold copy_bytes each.
    let t = time(dev, s.iters, |_| unsafe { dev.dtod(pd, ps, s.copy_bytes) })?;
    let d = s.gemm_dim;
    let (a, b, c) = (rand(dev, d * d, DType::BF16, 1)?, rand(dev, d * d, DType::BF16, 2)?, dev.alloc(d * d * 2)?);
    let g = Gemm::single(dev.ptr(&c), a.ptr, b.ptr, d, d, d, false, false, DType::BF16, DType::BF16, 0.0);
    // SAFETY: a, b and c hold d x d bf16 each.
    let tg = time(dev, s.iters, |_| unsafe { dev.gemm(&g) })?;
    Ok(Ceilings {
        copy_gbps: 2.0 * s.copy_bytes as f64 / t / 1e9,
        gemm_bf16_tflops: g.flops() / tg / 1e12,
        gemm_shape: format!("{d}x{d}x{d} bf16"),
    })
}

/// The memory-bound kernels at the model's shapes, bf16.
fn memory_bound<D: Device>(dev: &D, s: &BenchSizes, cfg: &Config, copy_gbps: f64) -> Result<Vec<KernelRow>> {
    let l = dev.launcher();
    let bf = DType::BF16;
    let (n, c, vp) = (s.batch * s.seq, cfg.n_embd, cfg.padded_vocab());
    let nc = n * c;
    let shape = format!("{}x{}x{c}", s.batch, s.seq);
    let mut rows = Vec::new();
    let mut row = |dt: DType, name: &str, shape: &str, bytes: usize, secs: f64| {
        let gbps = bytes as f64 / secs / 1e9;
        rows.push(KernelRow {
            name: name.into(),
            dtype: dt.suffix().into(),
            shape: shape.into(),
            ms: secs * 1e3,
            bytes: bytes as u64,
            gbps,
            frac_copy: gbps / copy_gbps,
        });
    };
    let (x, y, dy, out) =
        (rand(dev, 4 * nc, bf, 3)?, rand(dev, 4 * nc, bf, 4)?, rand(dev, 4 * nc, bf, 5)?, dev.alloc(4 * nc * 2)?);
    let (w, b) = (rand(dev, 4 * c, bf, 6)?, rand(dev, 4 * c, bf, 7)?);
    let (mean, rstd, po) = (dev.alloc(n * 4)?, dev.alloc(n * 4)?, dev.ptr(&out));
    let (pm, pr) = (dev.ptr(&mean), dev.ptr(&rstd));
    // [N,C] operands: slice i % 4 of the [4N,C] buffers (4 x (in + out) is twice an H100/H200's 50 MB L2)
    let sl = |p: DevPtr, i: usize| p + ((i % 4) * nc * 2) as u64;
    // SAFETY (the launches below up to the embedding): x, y, dy, out, res hold 4 N x C bf16 (a slice `sl` of
    // N x C, or the whole for the 4C-wide ops), w, b, dbias 4C, dw, db C, mean, rstd N f32, the scratches
    // the sizes their functions give.

    match cfg.llama() {
        None => {
            let t = time(dev, s.iters, |i| unsafe {
                kl::layernorm_forward(l, bf, sl(po, i), pm, pr, sl(x.ptr, i), w.ptr, b.ptr, n, c)
            })?;
            row(bf, "layernorm_forward", &shape, 2 * nc * 2 + 8 * n, t);
            let res = dev.alloc(4 * nc * 2)?;
            let t = time(dev, s.iters, |i| unsafe {
                kl::residual_layernorm_forward(
                    l,
                    bf,
                    sl(dev.ptr(&res), i),
                    sl(po, i),
                    pm,
                    pr,
                    sl(x.ptr, i),
                    sl(y.ptr, i),
                    w.ptr,
                    b.ptr,
                    n,
                    c,
                )
            })?;
            row(bf, "residual_layernorm_forward", &shape, 4 * nc * 2 + 8 * n, t);
            let (dw, db, scratch) =
                (dev.alloc(c * 2)?, dev.alloc(c * 2)?, dev.alloc(kl::layernorm_backward_scratch_bytes(n, c))?);
            let t = time(dev, s.iters, |i| unsafe {
                kl::layernorm_backward(
                    l,
                    bf,
                    sl(po, i),
                    dev.ptr(&dw),
                    dev.ptr(&db),
                    sl(dy.ptr, i),
                    sl(x.ptr, i),
                    w.ptr,
                    pm,
                    pr,
                    n,
                    c,
                    dev.ptr(&scratch),
                )
            })?;
            row(bf, "layernorm_backward", &shape, 4 * nc * 2 + 8 * n, t);
            let shape4 = format!("{}x{}x{}", s.batch, s.seq, 4 * c);
            let t = time(dev, s.iters, |_| unsafe { kl::gelu_forward(l, bf, po, x.ptr, 4 * nc) })?;
            row(bf, "gelu_forward", &shape4, 2 * 4 * nc * 2, t);
            let t = time(dev, s.iters, |_| unsafe { kl::gelu_backward(l, bf, po, x.ptr, dy.ptr, 4 * nc) })?;
            row(bf, "gelu_backward", &shape4, 3 * 4 * nc * 2, t);
        }
        Some(ls) => {
            // SAFETY (the launches of this arm): xf, yf hold N x 2F bf16 (the SwiGLU input and its gradient),
            // of N x F (its output and the incoming gradient), qkv N x W, inv_freq HS/2 f32, pos0 B zeros, and
            // the [N,C] slices, w, rstd (in `mean`), dw and the scratch as above.
            let t = time(dev, s.iters, |i| unsafe {
                kl::rmsnorm_forward(l, bf, sl(po, i), pm, sl(x.ptr, i), w.ptr, n, c, ls.rms_norm_eps)
            })?;
            row(bf, "rmsnorm_forward", &shape, 2 * nc * 2 + 4 * n, t);
            let (dw, scratch) = (dev.alloc(c * 2)?, dev.alloc(kl::rmsnorm_backward_scratch_bytes(n, c))?);
            let t = time(dev, s.iters, |i| unsafe {
                kl::rmsnorm_backward(
                    l,
                    bf,
                    sl(po, i),
                    dev.ptr(&dw),
                    sl(dy.ptr, i),
                    sl(x.ptr, i),
                    w.ptr,
                    pm,
                    n,
                    c,
                    dev.ptr(&scratch),
                )
            })?;
            row(bf, "rmsnorm_backward", &shape, 3 * nc * 2 + 4 * n, t);
            let f = ls.intermediate_size;
            let (xf, yf, of) = (rand(dev, 2 * n * f, bf, 14)?, dev.alloc(2 * n * f * 2)?, rand(dev, n * f, bf, 15)?);
            let shape_f = format!("{}x{}x{f}", s.batch, s.seq);
            let t = time(dev, s.iters, |_| unsafe { kl::swiglu_forward(l, bf, dev.ptr(&yf), xf.ptr, n, f) })?;
            row(bf, "swiglu_forward", &shape_f, 3 * n * f * 2, t);
            let t = time(dev, s.iters, |_| unsafe { kl::swiglu_backward(l, bf, dev.ptr(&yf), of.ptr, xf.ptr, n, f) })?;
            row(bf, "swiglu_backward", &shape_f, 5 * n * f * 2, t);
            drop((xf, yf, of));
            let (nh, nkv, hs) = (cfg.n_head, cfg.n_kv_head(), c / cfg.n_head);
            let width = cfg.qkv_width();
            let (qkv, inv_freq, pos0) =
                (rand(dev, n * width, bf, 16)?, rand(dev, hs / 2, DType::F32, 17)?, dev.alloc(s.batch * 4)?);
            let rs = kl::RopeShape { b: s.batch, t: s.seq, nh, nkv, hs };
            let rotated = n * (nh + nkv) * hs;
            let shape_r = format!("{}x{}x({nh}+{nkv})x{hs}", s.batch, s.seq);
            let t =
                time(dev, s.iters, |_| unsafe { kl::rope_forward(l, bf, qkv.ptr, inv_freq.ptr, dev.ptr(&pos0), rs) })?;
            row(bf, "rope_forward", &shape_r, 2 * rotated * 2, t);
            let t =
                time(dev, s.iters, |_| unsafe { kl::rope_backward(l, bf, qkv.ptr, inv_freq.ptr, dev.ptr(&pos0), rs) })?;
            row(bf, "rope_backward", &shape_r, 2 * rotated * 2, t);
        }
    }
    let t = time(dev, s.iters, |i| unsafe { kl::add(l, bf, sl(po, i), sl(x.ptr, i), sl(y.ptr, i), nc) })?;
    row(bf, "add", &shape, 3 * nc * 2, t);
    let (dbias, bscratch) = (dev.alloc(4 * c * 2)?, dev.alloc(kl::bias_backward_scratch_bytes(n, 4 * c))?);
    let t = time(dev, s.iters, |_| unsafe {
        kl::bias_backward(l, bf, dev.ptr(&dbias), dy.ptr, n, 4 * c, dev.ptr(&bscratch))
    })?;
    row(bf, "bias_backward", &format!("{}x{}x{}", s.batch, s.seq, 4 * c), 4 * nc * 2, t);
    drop((x, y, dy, out));

    // the embedding: the gathered rows are read once each (GPT-2 adds its position table)
    let mut rng = crate::util::rng::Rng::new(8);
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let tok = dev.alloc(n * 4)?;
    // SAFETY: tok holds n u32.
    unsafe { dev.htod(dev.ptr(&tok), bytemuck::cast_slice(&tokens))? };
    let (wte, enc) = (rand(dev, vp * c, bf, 9)?, dev.alloc(nc * 2)?);
    if cfg.llama().is_none() {
        let (pos0, wpe) = (dev.alloc(s.batch * 4)?, rand(dev, cfg.n_positions * c, bf, 10)?);
        // SAFETY: enc holds N x C bf16, tok N ids below vocab_size <= Vp (the rows of wte), wpe n_positions
        // rows (>= seq), pos0 B zeros.
        let t = time(dev, s.iters, |_| unsafe {
            kl::encoder_forward(
                l,
                bf,
                dev.ptr(&enc),
                dev.ptr(&tok),
                wte.ptr,
                wpe.ptr,
                dev.ptr(&pos0),
                s.batch,
                s.seq,
                c,
            )
        })?;
        row(bf, "encoder_forward", &shape, 3 * nc * 2 + 4 * n, t);
    } else {
        let pairs: Vec<u32> = tokens.iter().enumerate().flat_map(|(i, &t)| [i as u32, t]).collect();
        let pd = dev.alloc(2 * n * 4)?;
        // SAFETY: pd holds the 2N u32 pairs (row i of enc, a row of wte below vocab_size): every destination
        // row distinct; enc and wte do not overlap.
        unsafe { dev.htod(dev.ptr(&pd), bytemuck::cast_slice(&pairs))? };
        let t = time(dev, s.iters, |_| unsafe { kl::copy_rows(l, bf, dev.ptr(&enc), wte.ptr, dev.ptr(&pd), n, c) })?;
        row(bf, "copy_rows (embedding)", &shape, 2 * nc * 2 + 8 * n, t);
    }
    drop((wte, enc));

    // fused softmax-cross-entropy, forward and backward: logits read once, dlogits written in place; bf16
    // logits (comparable with other frameworks) and f32 logits (what mixed-precision training keeps)
    let (weights, losses) = (dev.alloc(n * 4)?, dev.alloc(n * 4)?);
    for ldt in [bf, DType::F32] {
        let logits = rand(dev, n * vp, ldt, 11)?;
        // each run overwrites the logits with their gradient; rerunning on gradients moves the same bytes
        // SAFETY: losses, weights hold N f32, logits N x Vp, tok N ids below vocab_size.
        let t = time(dev, s.iters, |_| unsafe {
            kl::crossentropy(
                l,
                ldt,
                dev.ptr(&losses),
                logits.ptr,
                dev.ptr(&tok),
                dev.ptr(&weights),
                n,
                cfg.vocab_size,
                vp,
                1.0,
                true,
            )
        })?;
        let name = if ldt == bf { "crossentropy" } else { "crossentropy_f32_logits" };
        row(ldt, name, &format!("{n}x{vp}"), 2 * n * vp * ldt.size() + 12 * n, t);
    }

    // AdamW over every parameter (one tensor of all of them, in the multi-tensor kernel training runs):
    // bf16 param and grad, f32 master, m, v (read and written)
    let np = cfg.num_params();
    let (param, grad) = (dev.alloc(np * 2)?, rand(dev, np, bf, 12)?);
    let (master, m, v) = (rand(dev, np, DType::F32, 13)?, dev.alloc(np * 4)?, dev.alloc(np * 4)?);
    let h = AdamWParams { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    let tensor = kl::AdamWTensor {
        param: dev.ptr(&param),
        master: master.ptr,
        grad: grad.ptr,
        m: dev.ptr(&m),
        v: dev.ptr(&v),
        n: np,
        weight_decay: h.weight_decay,
    };
    let table = kl::adamw_chunks(bf, &[tensor])?;
    let table_d = dev.alloc(table.len() * std::mem::size_of::<kl::AdamWChunk>())?;
    // SAFETY: table_d holds the table's bytes; the table covers param, grad (np bf16), master, m, v (np f32).
    unsafe { dev.htod(dev.ptr(&table_d), bytemuck::cast_slice(&table))? };
    let t = time(dev, s.iters, |_| unsafe { kl::adamw_multi(l, bf, dev.ptr(&table_d), table.len(), &h) })?;
    row(bf, "adamw", &format!("{np}"), np * (2 + 2 + 3 * 8), t);
    Ok(rows)
}

fn attention<D: Device>(dev: &D, s: &BenchSizes, cfg: &Config) -> Result<AttentionRow> {
    let l = dev.launcher();
    let bf = DType::BF16;
    let (b, t, c, nh, nkv) = (s.batch, s.seq, cfg.n_embd, cfg.n_head, cfg.n_kv_head());
    let (hs, w) = (c / nh, cfg.qkv_width());
    let (qkv, dout) = (rand(dev, b * t * w, bf, 20)?, rand(dev, b * t * c, bf, 21)?);
    let (out, lse, dqkv) = (dev.alloc(b * t * c * 2)?, dev.alloc(b * nh * t * 4)?, dev.alloc(b * t * w * 2)?);
    let pos0 = dev.alloc(b * 4)?;
    let (po, pl) = (dev.ptr(&out), dev.ptr(&lse));
    // SAFETY (the attention launches and products below): qkv, dqkv hold B x T x W bf16, dout, out, q, k,
    // v, y, out2 B x T x C, lse B x NH x T f32, sbuf B x NH x T x T bf16, pos0 B zeros, scratch its size.
    let fwd = || unsafe { kl::attention_forward(l, bf, po, pl, qkv.ptr, qkv.ptr, dev.ptr(&pos0), b, t, t, c, nh, nkv) };
    let t_fwd = time(dev, s.iters, |_| fwd())?;
    let scratch = dev.alloc(kl::attention_backward_scratch_bytes(b, t, nh))?;
    let t_both = time(dev, s.iters, |_| {
        fwd()?;
        unsafe {
            kl::attention_backward(
                l,
                bf,
                dev.ptr(&dqkv),
                dout.ptr,
                qkv.ptr,
                po,
                pl,
                b,
                t,
                c,
                nh,
                nkv,
                dev.ptr(&scratch),
            )
        }
    })?;
    let flops = 2.0 * (b * nh * t * t * hs) as f64;
    let mut row = AttentionRow {
        b,
        t,
        nh,
        nkv,
        hs,
        fused_fwd_ms: t_fwd * 1e3,
        fused_fwd_bwd_ms: t_both * 1e3,
        unfused_fwd_ms: f64::NAN,
        fused_fwd_tflops: flops / t_fwd / 1e12,
        fused_fwd_bwd_tflops: 3.5 * flops / t_both / 1e12,
        speedup_fwd_vs_unfused: f64::NAN,
        unfused_vs_fused_err: f64::NAN,
    };
    if nkv != nh {
        return Ok(row); // the unfused route's permute reads as many key/value heads as query heads
    }
    // unfused: q, k, v [B*NH, T, hs]; S = q k^T [B*NH, T, T]; P = causal softmax(S / sqrt(hs)); y = P v
    let (q, k, v, y, out2) = (
        dev.alloc(b * t * c * 2)?,
        dev.alloc(b * t * c * 2)?,
        dev.alloc(b * t * c * 2)?,
        dev.alloc(b * t * c * 2)?,
        dev.alloc(b * t * c * 2)?,
    );
    let sbuf = dev.alloc(b * nh * t * t * 2)?;
    let (pq, pk, pv, py, ps) = (dev.ptr(&q), dev.ptr(&k), dev.ptr(&v), dev.ptr(&y), dev.ptr(&sbuf));
    let bh = b * nh;
    let scores = Gemm {
        m: t,
        n: t,
        k: hs,
        ta: false,
        tb: true,
        a: pq,
        b: pk,
        out: ps,
        in_dt: bf,
        out_dt: bf,
        alpha: 1.0,
        beta: 0.0,
        batch: bh,
        stride_a: t * hs,
        stride_b: t * hs,
        stride_out: t * t,
        bias: 0,
    };
    let values = Gemm {
        m: t,
        n: hs,
        k: t,
        ta: false,
        tb: false,
        a: ps,
        b: pv,
        out: py,
        in_dt: bf,
        out_dt: bf,
        alpha: 1.0,
        beta: 0.0,
        batch: bh,
        stride_a: t * t,
        stride_b: t * hs,
        stride_out: t * hs,
        bias: 0,
    };
    let t_unf = time(dev, s.iters, |_| unsafe {
        kl::attention_permute(l, bf, pq, pk, pv, qkv.ptr, b, t, nh, hs)?;
        dev.gemm(&scores)?;
        kl::softmax_causal(l, bf, ps, ps, bh, t, 1.0 / (hs as f32).sqrt())?;
        dev.gemm(&values)?;
        kl::attention_unpermute(l, bf, dev.ptr(&out2), py, b, t, nh, hs)
    })?;
    fwd()?;
    // SAFETY: out and out2 hold B x T x C bf16.
    let (fused, unfused) =
        unsafe { (download_bf16(dev, po, b * t * c)?, download_bf16(dev, dev.ptr(&out2), b * t * c)?) };
    let scale = fused.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    let err = fused
        .iter()
        .zip(&unfused)
        .fold(0f32, |m, (a, b)| if b.is_finite() { m.max((a - b).abs()) } else { f32::INFINITY })
        / scale;
    row.unfused_fwd_ms = t_unf * 1e3;
    row.speedup_fwd_vs_unfused = t_unf / t_fwd;
    row.unfused_vs_fused_err = err as f64;
    Ok(row)
}

fn decode<D: Device>(dev: &D, s: &BenchSizes, cfg: &Config) -> Result<DecodeRow> {
    let l = dev.launcher();
    let bf = DType::BF16;
    let (b, tk, c, nh, nkv) = (s.batch, s.seq, cfg.n_embd, cfg.n_head, cfg.n_kv_head());
    let (hs, w) = (c / nh, cfg.qkv_width());
    let (q, kv) = (rand(dev, b * w, bf, 30)?, rand(dev, b * tk * w, bf, 31)?);
    let (out, out2, lse) = (dev.alloc(b * c * 2)?, dev.alloc(b * c * 2)?, dev.alloc(b * nh * 4)?);
    // the query row is the cache's last position, so it reads every key
    let pos: Vec<u32> = vec![(tk - 1) as u32; b];
    let pos0 = dev.alloc(b * 4)?;
    let (po, po2, pl, pp) = (dev.ptr(&out), dev.ptr(&out2), dev.ptr(&lse), dev.ptr(&pos0));
    // SAFETY (this function's launches): q holds B x W bf16, kv B x Tk x W, out, out2 B x C, lse B x NH f32,
    // pos0 B u32 (Tk - 1 each).
    unsafe { dev.htod(pp, bytemuck::cast_slice(&pos))? };
    let t_dec =
        time(dev, s.iters, |_| unsafe { kl::attention_decode(l, bf, po, pl, q.ptr, kv.ptr, pp, b, tk, c, nh, nkv) })?;
    let t_fused = time(dev, s.iters, |_| unsafe {
        kl::attention_forward(l, bf, po2, pl, q.ptr, kv.ptr, pp, b, 1, tk, c, nh, nkv)
    })?;
    // SAFETY: out and out2 hold B x C bf16.
    let (a, f) = unsafe { (download_bf16(dev, po, b * c)?, download_bf16(dev, po2, b * c)?) };
    let scale = f.iter().fold(1e-30f32, |m, x| m.max(x.abs()));
    let err = a.iter().zip(&f).fold(0f32, |m, (x, y)| if x.is_finite() { m.max((x - y).abs()) } else { f32::INFINITY });
    let bytes = (b * tk * 2 * nkv * hs * 2) as f64;
    Ok(DecodeRow {
        b,
        tk,
        nh,
        nkv,
        hs,
        decode_ms: t_dec * 1e3,
        fused_ms: t_fused * 1e3,
        decode_gbps: bytes / t_dec / 1e9,
        speedup_vs_fused: t_fused / t_dec,
        decode_vs_fused_err: (err / scale) as f64,
    })
}

/// Everything above, then the training steps on `be` (mixed precision). Each section goes to `on_section`
/// as soon as it is done; one that fails (an error, or an op's panic on a device error) is recorded as failed
/// and the others still run.
pub fn run<D: Device>(
    be: &KernelBackend<D>,
    s: &BenchSizes,
    progress: impl Fn(&str),
    on_section: impl FnMut(&Section),
) -> Result<Report> {
    let dev = &be.dev;
    let cfg = Config::preset(&s.preset, s.vocab)?;
    let mut sec = Sections { progress: &progress, on_section, failed: Vec::new() };
    let ceilings = sec.run("ceilings (copy, bf16 GEMM)", || ceilings(dev, s));
    let copy_gbps = ceilings.as_ref().map_or(f64::NAN, |c| c.copy_gbps);
    let kernels = sec.run("memory-bound kernels", || memory_bound(dev, s, &cfg, copy_gbps)).unwrap_or_default();
    let attention: Vec<AttentionRow> =
        sec.run("attention, fused and unfused", || attention(dev, s, &cfg)).into_iter().collect();
    let decode: Vec<DecodeRow> =
        sec.run("decode attention against the KV cache", || decode(dev, s, &cfg)).into_iter().collect();
    let name = dev.name();
    let (peak, known) = match (datasheet_peak(&name), &ceilings) {
        (Some(p), _) => (p, true),
        (None, Some(c)) => (c.gemm_bf16_tflops, false),
        (None, None) => (f64::NAN, false),
    };
    let mut train_step = Vec::new();
    for &(batch, seq) in &s.steps {
        let step = || -> Result<StepRow> {
            let r = crate::bench::cpu::train_step(
                be,
                &s.preset,
                cfg,
                batch,
                seq,
                s.warmup_steps,
                s.train_steps,
                &mut || {},
            )?;
            let tflops = r.gflops_per_s / 1e3;
            Ok(StepRow {
                batch,
                seq,
                median_ms: r.median_ms,
                tokens_per_s: r.tokens_per_s,
                tflops,
                mfu: tflops / peak,
                peak_tflops: peak,
                loss_first: r.loss_first,
                loss_last: r.loss_last,
            })
        };
        train_step.extend(sec.run(&format!("training step {batch} x {seq}"), step));
    }
    let mut profile = Vec::new();
    if let (true, Some(&(batch, seq))) = (profile::requested(), s.steps.first()) {
        let steps = s.train_steps.min(PROFILE_STEPS);
        let name = format!("profile: {steps} training steps {batch} x {seq} ({}=1)", profile::VAR);
        profile = sec
            .run(&name, || {
                // Recorded after one warmup step, so the table shows the steady state.
                let r = crate::bench::cpu::train_step(be, &s.preset, cfg, batch, seq, 1, steps, &mut profile::start);
                let synced = dev.synchronize();
                let rows = profile::finish();
                r.and(synced).and(rows)
            })
            .unwrap_or_default();
    }
    let device = if known { name } else { format!("{name} (peak unknown: MFU is over the measured GEMM ceiling)") };
    Ok(Report { device, ceilings, kernels, attention, decode, train_step, profile, failed: sec.failed })
}

/// The text report.
pub fn format(r: &Report) -> String {
    let mut s = format!("device: {}\n", r.device);
    if let Some(c) = &r.ceilings {
        s += &format!(
            "ceilings: copy {:.0} GB/s; bf16 GEMM {:.1} TFLOP/s ({})\n\n",
            c.copy_gbps, c.gemm_bf16_tflops, c.gemm_shape
        );
    }
    s += &format!("{:<28} {:<6} {:<18} {:>10} {:>10} {:>8}\n", "kernel", "dtype", "shape", "ms", "GB/s", "of copy");
    for k in &r.kernels {
        s += &format!(
            "{:<28} {:<6} {:<18} {:>10.4} {:>10.0} {:>7.0}%\n",
            k.name,
            k.dtype,
            k.shape,
            k.ms,
            k.gbps,
            100.0 * k.frac_copy
        );
    }
    for a in &r.attention {
        s += &format!(
            "\nattention B{} T{} NH{} KV{} hs{}: fused fwd {:.3} ms ({:.0} TFLOP/s), fwd+bwd {:.3} ms ({:.0} TFLOP/s)",
            a.b, a.t, a.nh, a.nkv, a.hs, a.fused_fwd_ms, a.fused_fwd_tflops, a.fused_fwd_bwd_ms, a.fused_fwd_bwd_tflops
        );
        s += &if a.unfused_fwd_ms.is_nan() {
            "; grouped-query heads: no unfused route to compare\n".to_string()
        } else {
            format!(
                "; unfused cuBLAS fwd {:.3} ms: fused is {:.2}x (outputs agree to {:.1e})\n",
                a.unfused_fwd_ms, a.speedup_fwd_vs_unfused, a.unfused_vs_fused_err
            )
        };
    }
    for d in &r.decode {
        s += &format!(
            "decode attention B{} Tk{} NH{} KV{} hs{}: {:.3} ms ({:.0} GB/s of cache), the training kernel {:.3} ms: {:.2}x (outputs agree to {:.1e})\n",
            d.b, d.tk, d.nh, d.nkv, d.hs, d.decode_ms, d.decode_gbps, d.fused_ms, d.speedup_vs_fused, d.decode_vs_fused_err
        );
    }
    s += "\n";
    for t in &r.train_step {
        s += &format!(
            "training step {} x {}: {:.1} ms, {:.0} tokens/s, {:.1} TFLOP/s, MFU {:.1}% of {:.0} TFLOP/s (loss {:.3} -> {:.3})\n",
            t.batch, t.seq, t.median_ms, t.tokens_per_s, t.tflops, 100.0 * t.mfu, t.peak_tflops, t.loss_first, t.loss_last
        );
    }
    if !r.profile.is_empty() {
        s += &format!("\ntime per kernel over {PROFILE_STEPS} training steps at most ({}=1):\n", profile::VAR);
        s += &profile::table(&r.profile);
    }
    for f in &r.failed {
        s += &format!("FAILED {}: {}\n", f.section, f.error.as_deref().unwrap_or(""));
    }
    s
}
