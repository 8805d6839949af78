//! `rlhf gradcheck --device cuda` (or `cuda-sim`): every op of the kernel backend, forward and backward,
//! in f32 and in mixed bf16, against the CPU engine on the same inputs, plus one whole training step
//! (loss, every parameter gradient, the gradient norm, the AdamW update with clipping).
//! The CPU engine is itself checked against finite differences in f64 (`crate::check`).
//!
//! Each op is one generic function run on both backends with inputs drawn from the same seed; a row
//! passes when every output tensor's error, max|got - want| / max|want| (the error relative to the
//! tensor's scale), is within the row's tolerance:
//! - f32: 1e-4. Both sides are f32 with different summation orders and the CPU's polynomial exp (about
//!   1e-6 relative each); the largest sums here have ~1e3 terms. A wrong index or formula gives 1e-2..1.
//! - bf16 ops: 3e-2. Inputs, outputs and intermediates in global memory are rounded to bf16 (8 significant
//!   bits: up to 2^-8 = 3.9e-3 relative per rounding); an output sees a few roundings, amplified where terms
//!   cancel (layernorm, softmax and entropy backward subtract means): ~8 roundings' worth is the budget.
//!   Measured in the simulator: at most 1.2e-2 (entropy backward), 5.6e-3 for every other op.
//! - bf16 whole step: 6e-2. Two layers of the above compound in the backward (measured: 1.5e-2); still an
//!   order of magnitude below what a broken kernel gives (0.3..1, or non-finite).

use crate::backend::{Backend, Cpu};
use crate::check::CheckResult;
use crate::kernels::{DType, KernelBackend};
use crate::model::{Acts, AdamW, AdamWConfig, Config, Decoder, Tensors};
use crate::ops::adamw::AdamWParams;
use crate::ops::sample::Sampling;
use crate::util::guard;
use crate::util::rng::Rng;
use anyhow::Result;

pub const F32_TOL: f64 = 1e-4;
pub const BF16_OP_TOL: f64 = 3e-2;
pub const BF16_STEP_TOL: f64 = 6e-2;

/// One output of one check: (row, tensor name, values).
type Out = (&'static str, String, Vec<f32>);

fn randn(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    rng.normals(n, std).into_iter().map(|x| x as f32).collect()
}

fn up<B: Backend<F = f32>>(be: &B, x: &[f32]) -> B::Buf {
    be.upload(x).expect("upload")
}

fn zeros<B: Backend<F = f32>>(be: &B, n: usize) -> B::Buf {
    be.zeros(n).expect("alloc")
}

/// `x` in the backend's compute type (bf16 in mixed precision), as activations and gradients are.
fn act<B: Backend<F = f32>>(be: &B, x: &[f32]) -> B::Buf {
    let (src, mut dst) = (up(be, x), zeros(be, x.len()));
    be.copy(&mut dst, 0, &src, 0, x.len());
    dst
}

fn out<B: Backend<F = f32>>(be: &B, row: &'static str, name: &str, b: &B::Buf) -> Out {
    (row, name.to_string(), be.download(b))
}

/// Token + position embedding, two rows at different start positions, repeated tokens.
fn embedding<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (b, t, c, v, maxt) = (2, 7, 64, 50, 16);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(9) as u32 * 5).collect();
    let pos0 = [0u32, 3];
    let (wte, wpe, dout) =
        (up(be, &randn(rng, v * c, 1.0)), up(be, &randn(rng, maxt * c, 1.0)), act(be, &randn(rng, b * t * c, 1.0)));
    let ids = be.upload_ids(&tokens).expect("ids");
    let mut o = zeros(be, b * t * c);
    be.encoder_forward(&mut o, &ids, &wte, &wpe, &pos0, t, c);
    let (mut dwte, mut dwpe) = (zeros(be, v * c), zeros(be, maxt * c));
    be.encoder_backward(&mut dwte, Some(&mut dwpe), &dout, &ids, &pos0, t, c);
    vec![
        out(be, "embedding forward", "out", &o),
        out(be, "embedding backward", "dwte", &dwte),
        out(be, "embedding backward", "dwpe", &dwpe),
    ]
}

fn layernorm<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (n, c) = (33, 96);
    let x: Vec<f32> = randn(rng, n * c, 2.0).iter().map(|v| v + 0.5).collect();
    let (inp, w, bias, dout) =
        (act(be, &x), up(be, &randn(rng, c, 1.0)), up(be, &randn(rng, c, 1.0)), act(be, &randn(rng, n * c, 1.0)));
    let (mut o, mut mean, mut rstd) = (zeros(be, n * c), zeros(be, n), zeros(be, n));
    be.layernorm_forward(&mut o, &mut mean, &mut rstd, &inp, &w, &bias, c);
    let (mut dinp, mut dw, mut db) = (zeros(be, n * c), zeros(be, c), zeros(be, c));
    be.layernorm_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &w, &mean, &rstd, c);
    vec![
        out(be, "layernorm forward", "out", &o),
        out(be, "layernorm forward", "mean", &mean),
        out(be, "layernorm forward", "rstd", &rstd),
        out(be, "layernorm backward", "dinp", &dinp),
        out(be, "layernorm backward", "dw", &dw),
        out(be, "layernorm backward", "db", &db),
    ]
}

/// RMSNorm with Llama's eps; 80 columns: the packed path in both dtypes, a ragged column block of the dw sums.
fn rmsnorm<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (n, c) = (33, 80);
    let (inp, w, dout) =
        (act(be, &randn(rng, n * c, 2.0)), up(be, &randn(rng, c, 1.0)), act(be, &randn(rng, n * c, 1.0)));
    let (mut o, mut rstd) = (zeros(be, n * c), zeros(be, n));
    be.rmsnorm_forward(&mut o, &mut rstd, &inp, &w, c, 1e-5);
    let (mut dinp, mut dw) = (zeros(be, n * c), zeros(be, c));
    be.rmsnorm_backward(&mut dinp, &mut dw, &dout, &inp, &w, &rstd, c);
    vec![
        out(be, "rmsnorm forward", "out", &o),
        out(be, "rmsnorm forward", "rstd", &rstd),
        out(be, "rmsnorm backward", "dinp", &dinp),
        out(be, "rmsnorm backward", "dw", &dw),
    ]
}

/// Row names of the linear checks: forward, backward.
const LINEAR_ROWS: [&str; 2] = ["linear forward", "linear backward"];
/// The same with one output feature (PPO's value and reward heads): the forward product has n = 1, the
/// input gradient k = 1.
const SCALAR_HEAD_ROWS: [&str; 2] = ["scalar head forward (oc = 1)", "scalar head backward (oc = 1)"];

/// Matmul + bias forward and the three backward products (cuBLASLt on the GPU), `n` rows of `c` inputs to
/// `oc` outputs.
fn linear<B: Backend<F = f32>>(
    be: &B,
    rng: &mut Rng,
    n: usize,
    c: usize,
    oc: usize,
    names: [&'static str; 2],
) -> Vec<Out> {
    let (inp, w, bias, dout) = (
        act(be, &randn(rng, n * c, 1.0)),
        up(be, &randn(rng, c * oc, 0.2)),
        up(be, &randn(rng, oc, 1.0)),
        act(be, &randn(rng, n * oc, 1.0)),
    );
    let mut o = zeros(be, n * oc);
    be.linear_forward(&mut o, &inp, &w, Some(&bias), n, c, oc);
    let (mut dinp, mut dw, mut db) = (zeros(be, n * c), zeros(be, c * oc), zeros(be, oc));
    be.linear_backward(Some(&mut dinp), &mut dw, Some(&mut db), &dout, &inp, &w, n, c, oc);
    vec![
        out(be, names[0], "out", &o),
        out(be, names[1], "dinp", &dinp),
        out(be, names[1], "dw", &dw),
        out(be, names[1], "dbias", &db),
    ]
}

/// GELU and the residual ops on a length that is not a multiple of the 16-byte packs.
fn elementwise<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let n = 1003;
    let (x, y, dout) = (act(be, &randn(rng, n, 2.0)), act(be, &randn(rng, n, 1.0)), act(be, &randn(rng, n, 1.0)));
    let (mut g, mut dg) = (zeros(be, n), zeros(be, n));
    be.gelu_forward(&mut g, &x);
    be.gelu_backward(&mut dg, &x, &dout);
    let mut s = zeros(be, n);
    be.add(&mut s, &x, &y);
    be.accumulate(&mut s, &dout);
    be.scale(&mut s, 0.75);
    vec![
        out(be, "gelu forward", "out", &g),
        out(be, "gelu backward", "dinp", &dg),
        out(be, "residual add/accumulate/scale", "out", &s),
    ]
}

/// SwiGLU on packed [gate | up] rows; F = 100: the 16-byte chunks in f32, single elements in bf16.
fn swiglu<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (n, f) = (13, 100);
    let (x, dout) = (act(be, &randn(rng, n * 2 * f, 2.0)), act(be, &randn(rng, n * f, 1.0)));
    let (mut o, mut dx) = (zeros(be, n * f), zeros(be, n * 2 * f));
    be.swiglu_forward(&mut o, &x, f);
    be.swiglu_backward(&mut dx, &dout, &x, f);
    vec![out(be, "swiglu forward", "out", &o), out(be, "swiglu backward", "dinp", &dx)]
}

/// Causal attention, NH query heads over NKV kv heads (qkv rows C + 2 NKV C / NH wide); head size 64 takes the
/// tensor-core kernel in bf16, 16 the CUDA-core one.
fn attention<B: Backend<F = f32>>(
    be: &B,
    rng: &mut Rng,
    c: usize,
    (nh, nkv): (usize, usize),
    fwd: &'static str,
    bwd: &'static str,
) -> Vec<Out> {
    let (b, t, w) = (2, 19, c + 2 * nkv * (c / nh));
    let (qkv, dout) = (act(be, &randn(rng, b * t * w, 1.0)), act(be, &randn(rng, b * t * c, 1.0)));
    let (mut o, mut lse) = (zeros(be, b * t * c), zeros(be, b * nh * t));
    be.attention_forward(&mut o, &mut lse, &qkv, &qkv, &[0, 0], b, t, t, c, nh, nkv);
    let mut dqkv = zeros(be, b * t * w);
    be.attention_backward(&mut dqkv, &dout, &qkv, &o, &lse, b, t, c, nh, nkv);
    vec![out(be, fwd, "out", &o), out(be, fwd, "lse", &lse), out(be, bwd, "dqkv", &dqkv)]
}

/// RoPE on a grouped qkv (NH = 4, NKV = 2, head size 64) with Llama 3 scaling, one row at positions near 3000
/// (the f32 angles of both engines are the same product; their sin and cos may differ by an ulp or two).
fn rope<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    use crate::ops::rope::{Llama3Scaling, Rope};
    let (b, t, nh, nkv, hs) = (2, 11, 4, 2, 64);
    let scaling = Llama3Scaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let rope = Rope::new(500000.0, hs, Some(scaling));
    let (pos0, n) = ([0u32, 2990], b * t * (nh + 2 * nkv) * hs);
    let (mut x, mut dx) = (act(be, &randn(rng, n, 1.0)), act(be, &randn(rng, n, 1.0)));
    be.rope_forward(&mut x, &rope, &pos0, b, t, nh, nkv);
    be.rope_backward(&mut dx, &rope, &pos0, b, t, nh, nkv);
    vec![out(be, "rope forward", "qkv", &x), out(be, "rope backward", "dqkv", &dx)]
}

/// One decode step of attention: a query row per batch row against a KV cache at ragged positions (the
/// engine's decode kernel, taken when Tq = 1), NH query heads over NKV kv heads.
fn attention_decode<B: Backend<F = f32>>(
    be: &B,
    rng: &mut Rng,
    c: usize,
    (nh, nkv): (usize, usize),
    row: &'static str,
) -> Vec<Out> {
    let (b, tk, w) = (2, 150, c + 2 * nkv * (c / nh));
    let (q, kv) = (act(be, &randn(rng, b * w, 1.0)), act(be, &randn(rng, b * tk * w, 1.0)));
    let (mut o, mut lse) = (zeros(be, b * c), zeros(be, b * nh));
    be.attention_forward(&mut o, &mut lse, &q, &kv, &[7, 149], b, 1, tk, c, nh, nkv);
    vec![out(be, row, "out", &o), out(be, row, "lse", &lse)]
}

/// Masked, temperature-scaled cross-entropy on padded rows (pad columns must come back zero).
fn crossentropy<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (n, v, vp) = (9, 100, 128);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    let weights: Vec<f32> = (0..n).map(|i| if i % 4 == 2 { 0.0 } else { 1.0 / 7.0 }).collect();
    let (mut logits, w, ids) =
        (act(be, &randn(rng, n * vp, 3.0)), up(be, &weights), be.upload_ids(&targets).expect("ids"));
    let mut losses = zeros(be, n);
    be.crossentropy(&mut losses, &mut logits, &ids, &w, v, vp, 1.0 / 0.8, true);
    vec![out(be, "crossentropy forward", "losses", &losses), out(be, "crossentropy backward", "dlogits", &logits)]
}

/// Entropy of the tempered softmax and its coefficient-weighted gradient (PPO's entropy bonus).
fn entropy<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (n, v, vp) = (7, 100, 128);
    let coef: Vec<f32> = (0..n).map(|i| if i % 3 == 1 { 0.0 } else { -0.1 }).collect();
    let (logits, c) = (act(be, &randn(rng, n * vp, 2.0)), up(be, &coef));
    let (mut ent, mut d) = (zeros(be, n), zeros(be, n * vp));
    be.entropy(&mut ent, &mut d, &logits, &c, v, vp, 1.0 / 0.7, true).expect("entropy");
    vec![out(be, "entropy forward", "entropy", &ent), out(be, "entropy backward", "dlogits", &d)]
}

/// The row scatter of the KV-cache append: the qkv rows of two batch rows to their positions in a cache.
fn rows<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let (w, t, cap) = (3 * 40, 3, 9);
    let src = act(be, &randn(rng, 2 * t * w, 1.0));
    let mut cache = zeros(be, 2 * cap * w);
    let pairs: Vec<(u32, u32)> =
        (0..2).flat_map(|b| (0..t).map(move |j| ((b * cap + 2 + 4 * b + j) as u32, (b * t + j) as u32))).collect();
    be.copy_rows(&mut cache, &src, w, &pairs);
    vec![out(be, "copy rows (KV-cache append)", "cache", &cache)]
}

/// The sampler, plain, greedy and filtered, on the same logits (rounded to bf16 first, so that both engines
/// read the very same values in either precision) and uniforms; the last two at GPT-2's vocabulary, where a
/// top-p nucleus holds thousands of ids. The ids come as one-hot rows: any id that differs is an error of 1
/// (100%), whatever the tolerance.
fn sample<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Result<Vec<Out>> {
    let plain = Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 };
    let mut outs = vec![];
    for (row, (n, v, vp), s) in [
        ("sample (plain)", (6, 300, 304), plain),
        ("sample (greedy)", (6, 300, 304), Sampling { temperature: 0.0, ..plain }),
        ("sample (top-k, top-p)", (6, 300, 304), Sampling { temperature: 0.8, top_k: 9, top_p: 0.9 }),
        ("sample (top-p, V = 50257)", (3, 50257, 50304), Sampling { top_p: 0.95, ..plain }),
        ("sample (top-k, V = 50257)", (3, 50257, 50304), Sampling { top_k: 50, ..plain }),
    ] {
        let x: Vec<f32> = randn(rng, n * vp, 3.0).iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        let logits = act(be, &x);
        let u: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        let picks = be.sample(&logits, v, vp, &s, &u)?;
        let mut ids = vec![0f32; n * v];
        picks.iter().enumerate().for_each(|(i, &(id, _))| ids[i * v + id as usize] = 1.0);
        outs.push((row, "ids".to_string(), ids));
        outs.push((row, "logprobs".to_string(), picks.iter().map(|p| p.1).collect()));
    }
    Ok(outs)
}

/// AdamW at step 3 from nonzero moments with clipping, and the sum of squares behind the clipping.
fn adamw<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Vec<Out> {
    let n = 1003;
    let (mut p, g) = (up(be, &randn(rng, n, 1.0)), act(be, &randn(rng, n, 0.5)));
    let (mut m, mut v) =
        (up(be, &randn(rng, n, 0.1)), up(be, &randn(rng, n, 0.1).iter().map(|x| x * x).collect::<Vec<_>>()));
    let norm = be.sum_squares(&g).sqrt();
    let h = AdamWParams {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        step: 3,
        grad_scale: (1.0 / norm).min(1.0),
    };
    be.adamw(&mut p, &g, &mut m, &mut v, &h);
    vec![
        ("sum of squares", "norm".into(), vec![norm as f32]),
        out(be, "adamw", "param", &p),
        out(be, "adamw", "m", &m),
        out(be, "adamw", "v", &v),
    ]
}

const UPDATE_LR: f64 = 1e-2;
const UPDATE_ROW: &str = "train step: AdamW update / lr";
const GRAD_ROW: &str = "train step: every gradient";
/// Update entries compared: where |grad| >= this fraction of its tensor's largest |grad| on the CPU.
const UPDATE_MIN_GRAD: f32 = 0.05;

/// One whole training step of a 2-layer model (head size 64, padded vocabulary), as `rlhf pretrain` runs it.
fn train_step<B: Backend<F = f32>>(be: &B, rng: &mut Rng) -> Result<Vec<Out>> {
    let cfg = Config::gpt2(2, 2, 128, 61, 32);
    let (b, t) = (2, 16);
    let host: Vec<Vec<f32>> = Decoder::init(&Cpu::<f32>::new(), cfg, rng.next_u64())?
        .to_host(&Cpu::<f32>::new())
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut model = Decoder::from_host(be, cfg, &host)?;
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(61) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(61) as u32).collect();
    let weights: Vec<f32> = (0..b * t).map(|i| if i % 5 == 0 { 0.0 } else { 1.0 / 25.0 }).collect();
    let mut acts = Acts::new(be, &cfg, b, t)?;
    let mut grads = Tensors::zeros(be, &cfg)?;
    model.forward(be, &mut acts, &tokens, None, None)?;
    let loss = model.lm_loss(be, &mut acts, &targets, &weights, 1.0, Some(&mut grads))?;
    model.backward(be, &mut acts, &mut grads);
    let mut opt = AdamW::new(be, &cfg, AdamWConfig { grad_clip: 0.5, ..AdamWConfig::default() })?;
    let norm = opt.update(be, &mut model.params, &grads, UPDATE_LR);
    let mut outs: Vec<Out> = vec![
        ("train step: loss", "loss".into(), vec![loss as f32]),
        ("train step: gradient norm", "norm".into(), vec![norm as f32]),
    ];
    for (spec, g) in crate::model::decoder::tensors_to_host(be, &cfg, &grads) {
        outs.push((GRAD_ROW, spec.name.clone(), g));
    }
    for ((spec, p), before) in model.to_host(be).into_iter().zip(&host) {
        let update = p.iter().zip(before).map(|(a, b)| ((*a as f64 - *b as f64) / UPDATE_LR) as f32).collect();
        outs.push((UPDATE_ROW, spec.name.clone(), update));
    }
    Ok(outs)
}

/// The groups of rows, in the order they run, each with its random stream.
const GROUPS: &[(&str, u64)] = &[
    ("embedding", 1),
    ("layernorm", 2),
    ("rmsnorm", 12),
    ("linear", 3),
    ("scalar head", 11),
    ("elementwise", 4),
    ("swiglu", 13),
    ("attention hs64", 5),
    ("attention hs16", 6),
    ("rope", 14),
    ("crossentropy", 7),
    ("entropy", 10),
    ("adamw", 8),
    ("rows", 12),
    ("sample", 13),
    ("attention decode", 14),
    ("attention gqa", 15),
    ("train step", 9),
];

/// The outputs of group `name` on `be`.
fn group<B: Backend<F = f32>>(be: &B, name: &str, rng: &mut Rng) -> Result<Vec<Out>> {
    Ok(match name {
        "embedding" => embedding(be, rng),
        "layernorm" => layernorm(be, rng),
        "rmsnorm" => rmsnorm(be, rng),
        "linear" => linear(be, rng, 17, 64, 96, LINEAR_ROWS),
        "scalar head" => linear(be, rng, 13, 64, 1, SCALAR_HEAD_ROWS),
        "elementwise" => elementwise(be, rng),
        "swiglu" => swiglu(be, rng),
        "attention hs64" => {
            attention(be, rng, 128, (2, 2), "attention forward (head size 64)", "attention backward (head size 64)")
        }
        "attention hs16" => {
            attention(be, rng, 32, (2, 2), "attention forward (head size 16)", "attention backward (head size 16)")
        }
        "rope" => rope(be, rng),
        "crossentropy" => crossentropy(be, rng),
        "entropy" => entropy(be, rng),
        "adamw" => adamw(be, rng),
        "rows" => rows(be, rng),
        "sample" => sample(be, rng)?,
        "attention decode" => attention_decode(be, rng, 32, (2, 2), "attention forward (decode, Tq = 1)"),
        // grouped-query attention: head size 64 (tensor cores in bf16) over NKV 2, the decode step over NKV 1
        "attention gqa" => {
            let (fwd, bwd) = ("attention forward (NH 4, NKV 2, head size 64)", "attention backward (NH 4, NKV 2)");
            let mut rows = attention(be, rng, 256, (4, 2), fwd, bwd);
            rows.extend(attention_decode(be, rng, 128, (4, 1), "attention forward (decode, NH 4, NKV 1)"));
            rows
        }
        "train step" => train_step(be, rng)?,
        other => unreachable!("no check group {other}"),
    })
}

/// The AdamW update entries whose reference gradient is clearly nonzero. Adam's first step moves each
/// parameter by about lr * sign(grad), so where the true gradient is zero (the key biases, by softmax's
/// shift invariance) or tiny, the sign of rounding noise decides the move and no two implementations agree;
/// where |grad| is 5% of its tensor's largest, the gradient errors above (1e-4 f32, ~1.5e-2 bf16) cannot
/// flip it, and the update must match. The AdamW kernel itself is checked on every entry by the "adamw" row.
fn update_entries(want: &[Out], name: &str, got: &[f32], upd: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let grad = &want.iter().find(|(r, n, _)| *r == GRAD_ROW && n == name).expect("gradient of every parameter").2;
    let limit = UPDATE_MIN_GRAD * grad.iter().fold(0f32, |m, x| m.max(x.abs()));
    let keep: Vec<usize> = (0..grad.len()).filter(|&i| grad[i].abs() >= limit && limit > 0.0).collect();
    (keep.iter().map(|&i| got[i]).collect(), keep.iter().map(|&i| upd[i]).collect())
}

/// max|got - want| / max|want| (infinite when `got` has a non-finite entry).
fn scaled_err(got: &[f32], want: &[f32]) -> (f64, f64) {
    let scale = want.iter().fold(1e-30f64, |m, &x| m.max(x.abs() as f64));
    let err = got.iter().zip(want).fold(0.0f64, |m, (&g, &w)| {
        if g.is_finite() {
            m.max((g as f64 - w as f64).abs())
        } else {
            f64::INFINITY
        }
    });
    (err, err / scale)
}

fn tolerance(compute: DType, row: &str) -> f64 {
    match compute {
        DType::F32 => F32_TOL,
        DType::BF16 if row.starts_with("train step") => BF16_STEP_TOL,
        DType::BF16 => BF16_OP_TOL,
    }
}

/// Every check on `be` against the CPU engine, one group at a time; `on_row` gets each row as soon as its
/// group has run. A group that fails on `be` (an op panics on a device error) is one failed row naming the
/// group and the error, and the groups after it still run.
pub fn run<D: crate::kernels::device::Device>(
    be: &KernelBackend<D>,
    seed: u64,
    mut on_row: impl FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let prec = match be.compute {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
    };
    let mut rows: Vec<CheckResult> = Vec::new();
    for &(name, stream) in GROUPS {
        let outputs = guard::catch(|| {
            let want = group(&Cpu::<f32>::new(), name, &mut Rng::stream(seed, stream))?;
            let got = group(be, name, &mut Rng::stream(seed, stream))?;
            Ok((want, got))
        });
        let new = match outputs {
            Ok((want, got)) => compare(be.compute, prec, &want, &got),
            Err(e) => vec![failed(prec, name, &e)],
        };
        new.iter().for_each(&mut on_row);
        rows.extend(new);
    }
    rows
}

/// The row of a group that did not finish.
fn failed(prec: &str, group: &str, e: &anyhow::Error) -> CheckResult {
    CheckResult {
        op: format!("{prec} {group}: {e:#}"),
        entries: 0,
        max_abs_err: f64::INFINITY,
        max_rel_err: f64::INFINITY,
        tolerance: 0.0,
        ok: false,
    }
}

/// One group's rows: each output compared with the CPU's, tensors of a row merged under its worst.
fn compare(compute: DType, prec: &str, want: &[Out], got: &[Out]) -> Vec<CheckResult> {
    let mut rows: Vec<CheckResult> = Vec::new();
    for ((row, name, g), (_, _, w)) in got.iter().zip(want) {
        let (g, w) = if *row == UPDATE_ROW { update_entries(want, name, g, w) } else { (g.clone(), w.clone()) };
        let (abs, rel) = scaled_err(&g, &w);
        let tol = tolerance(compute, row);
        let label = format!("{prec} {row}");
        match rows.iter_mut().find(|r| r.op.starts_with(&format!("{label} ["))) {
            Some(r) => {
                r.entries += g.len();
                if rel > r.max_rel_err || !rel.is_finite() {
                    (r.op, r.max_abs_err, r.max_rel_err, r.ok) = (format!("{label} [{name}]"), abs, rel, rel <= tol);
                }
            }
            None => rows.push(CheckResult {
                op: format!("{label} [{name}]"),
                entries: g.len(),
                max_abs_err: abs,
                max_rel_err: rel,
                tolerance: tol,
                ok: rel <= tol,
            }),
        }
    }
    rows
}
