//! Checks of every hand-written gradient (`rlhf gradcheck`): here the harness and the rows for every op and
//! the whole model, in [`losses`] the pipeline's losses (alone and through the model), in [`kernels`] every
//! CUDA kernel and a whole training step against the CPU engine. This layer sits above the steps it checks.
//!
//! Gradients are checked against central finite differences in f64 (the CPU backend instantiated with f64).
//!
//! For a scalar loss L(inputs) — each op's output contracted with a fixed random tensor R, L = sum(out*R),
//! so dL/dout = R — the numeric gradient is (L(x+h) - L(x-h)) / 2h with h = 1e-6. In f64 its error is
//! about h^2 |L'''| / 6 + eps_machine |L| / h ~ 1e-10, so an entry passes when
//!   |analytic - numeric| <= ATOL + RTOL * max|numeric|   with ATOL = 1e-8, RTOL = 1e-6,
//! five orders of magnitude above the method's own error and far below any real bug (a wrong term moves
//! the gradient by O(1) relative). Large tensors are checked on a random subset of entries.

pub mod kernels;
pub mod losses;

use crate::backend::{Backend, Cpu};
use crate::model::{Acts, Config, Decoder, Tensors};
use crate::util::rng::Rng;
use serde::Serialize;

pub const ATOL: f64 = 1e-8;
pub const RTOL: f64 = 1e-6;
const H: f64 = 1e-6;
/// Entries checked per input tensor (all of them when the tensor is smaller).
const MAX_ENTRIES: usize = 48;

#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    pub op: String,
    pub entries: usize,
    pub max_abs_err: f64,
    pub max_rel_err: f64,
    pub tolerance: f64,
    pub ok: bool,
}

type Inputs = Vec<Vec<f64>>;

/// The decoder's gradient buffers cut to the lengths of the parameters they belong to (a buffer may be
/// padded past its tensor), in the order of `params`: the analytic side of a whole-model check.
fn param_grads(grads: &Tensors<Cpu<f64>>, params: &Inputs) -> Inputs {
    grads.bufs.iter().zip(params).map(|(g, x)| g[..x.len()].to_vec()).collect()
}

/// Compare `analytic` (one gradient per input tensor) with central differences of `loss` at `inputs`.
pub fn compare(
    op: &str,
    inputs: &Inputs,
    loss: impl Fn(&Inputs) -> f64,
    analytic: &Inputs,
    rng: &mut Rng,
) -> CheckResult {
    let mut x = inputs.clone();
    let (mut max_abs, mut max_num, mut entries) = (0.0f64, 0.0f64, 0);
    for ti in 0..x.len() {
        let n = x[ti].len();
        let mut idx: Vec<usize> = (0..n).collect();
        if n > MAX_ENTRIES {
            rng.shuffle(&mut idx);
            idx.truncate(MAX_ENTRIES);
        }
        for i in idx {
            let orig = x[ti][i];
            x[ti][i] = orig + H;
            let lp = loss(&x);
            x[ti][i] = orig - H;
            let lm = loss(&x);
            x[ti][i] = orig;
            let num = (lp - lm) / (2.0 * H);
            max_abs = max_abs.max((analytic[ti][i] - num).abs());
            max_num = max_num.max(num.abs());
            entries += 1;
        }
    }
    let tolerance = ATOL + RTOL * max_num;
    CheckResult {
        op: op.into(),
        entries,
        max_abs_err: max_abs,
        max_rel_err: max_abs / max_num.max(1e-300),
        tolerance,
        ok: max_abs <= tolerance && max_abs.is_finite(),
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

type Be = Cpu<f64>;

/// Token + position embedding, rows starting at different positions.
pub fn check_embedding(rng: &mut Rng) -> CheckResult {
    let (b, t, c, v, maxt) = (2, 3, 5, 7, 6);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let pos0 = [0u32, 2];
    let r = rng.normals(b * t * c, 1.0);
    let inputs = vec![rng.normals(v * c, 1.0), rng.normals(maxt * c, 1.0)];
    let f = |x: &Inputs| {
        let mut out = vec![0.0; b * t * c];
        crate::ops::embedding::forward(&mut out, &tokens, &x[0], &x[1], &pos0, t, c);
        dot(&out, &r)
    };
    let mut g = vec![vec![0.0; v * c], vec![0.0; maxt * c]];
    let (gw, gp) = g.split_at_mut(1);
    crate::ops::embedding::backward(&mut gw[0], Some(&mut gp[0]), &r, &tokens, &pos0, t, c);
    compare("embedding", &inputs, f, &g, rng)
}

pub fn check_layernorm(rng: &mut Rng) -> CheckResult {
    let (n, c) = (5, 7);
    let r = rng.normals(n * c, 1.0);
    let inputs = vec![rng.normals(n * c, 1.0), rng.normals(c, 1.0), rng.normals(c, 1.0)];
    let fwd = |x: &Inputs| {
        let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        crate::ops::layernorm::forward(&mut out, &mut m, &mut s, &x[0], &x[1], &x[2], c);
        (out, m, s)
    };
    let (_, m, s) = fwd(&inputs);
    let mut g = vec![vec![0.0; n * c], vec![0.0; c], vec![0.0; c]];
    let [dx, dw, db] = &mut g[..] else { unreachable!() };
    crate::ops::layernorm::backward(dx, dw, db, &r, &inputs[0], &inputs[1], &m, &s, c);
    compare("layernorm", &inputs, |x| dot(&fwd(x).0, &r), &g, rng)
}

/// RMSNorm with Qwen2's eps, on rows of different scales.
pub fn check_rmsnorm(rng: &mut Rng) -> CheckResult {
    let (n, c, eps) = (5, 7, 1e-6);
    let r = rng.normals(n * c, 1.0);
    let x: Vec<f64> = rng.normals(n * c, 1.0).iter().enumerate().map(|(i, v)| v * (1 + i / c) as f64).collect();
    let inputs = vec![x, rng.normals(c, 1.0)];
    let fwd = |x: &Inputs| {
        let (mut out, mut s) = (vec![0.0; n * c], vec![0.0; n]);
        crate::ops::rmsnorm::forward(&mut out, &mut s, &x[0], &x[1], c, eps);
        (out, s)
    };
    let (_, s) = fwd(&inputs);
    let mut g = vec![vec![0.0; n * c], vec![0.0; c]];
    let [dx, dw] = &mut g[..] else { unreachable!() };
    crate::ops::rmsnorm::backward(dx, dw, &r, &inputs[0], &inputs[1], &s, c);
    compare("rmsnorm", &inputs, |x| dot(&fwd(x).0, &r), &g, rng)
}

pub fn check_linear(rng: &mut Rng) -> CheckResult {
    let be = Be::new();
    let (n, c, oc) = (5, 6, 7);
    let r = rng.normals(n * oc, 1.0);
    let inputs = vec![rng.normals(n * c, 1.0), rng.normals(c * oc, 1.0), rng.normals(oc, 1.0)];
    let f = |x: &Inputs| {
        let mut out = vec![0.0; n * oc];
        be.linear_forward(&mut out, &x[0], &x[1], Some(&x[2]), n, c, oc);
        dot(&out, &r)
    };
    let mut g = vec![vec![0.0; n * c], vec![0.0; c * oc], vec![0.0; oc]];
    let [dx, dw, db] = &mut g[..] else { unreachable!() };
    be.linear_backward(Some(dx), dw, Some(db), &r, &inputs[0], &inputs[1], n, c, oc);
    compare("linear", &inputs, f, &g, rng)
}

pub fn check_attention(rng: &mut Rng) -> CheckResult {
    let (b, t, c, nh) = (2, 5, 8, 2);
    let r = rng.normals(b * t * c, 1.0);
    let inputs = vec![rng.normals(b * t * 3 * c, 1.0)];
    let pos0 = vec![0u32; b];
    let fwd = |x: &Inputs| {
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
        crate::ops::attention::forward(&mut out, &mut lse, &x[0], &x[0], &pos0, b, t, t, c, nh, nh);
        (out, lse)
    };
    let (out, lse) = fwd(&inputs);
    let mut g = vec![vec![0.0; b * t * 3 * c]];
    crate::ops::attention::backward(&mut g[0], &r, &inputs[0], &out, &lse, b, t, c, nh, nh);
    compare("attention", &inputs, |x| dot(&fwd(x).0, &r), &g, rng)
}

/// Grouped-query attention: NH query heads over NKV < NH key/value heads (dk, dv summed over each group).
pub fn check_attention_gqa(rng: &mut Rng, nh: usize, nkv: usize, hs: usize) -> CheckResult {
    let (b, t, c) = (2, 5, nh * hs);
    let w = c + 2 * nkv * hs;
    let r = rng.normals(b * t * c, 1.0);
    let inputs = vec![rng.normals(b * t * w, 1.0)];
    let pos0 = vec![0u32; b];
    let fwd = |x: &Inputs| {
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
        crate::ops::attention::forward(&mut out, &mut lse, &x[0], &x[0], &pos0, b, t, t, c, nh, nkv);
        (out, lse)
    };
    let (out, lse) = fwd(&inputs);
    let mut g = vec![vec![0.0; b * t * w]];
    crate::ops::attention::backward(&mut g[0], &r, &inputs[0], &out, &lse, b, t, c, nh, nkv);
    compare(&format!("attention gqa (nh {nh}, nkv {nkv}, hs {hs})"), &inputs, |x| dot(&fwd(x).0, &r), &g, rng)
}

/// RoPE on the q and k heads of a grouped qkv row (NH = 2, NKV = 1), rows at different start positions, with
/// Llama 3 scaling whose bands each hold one of the three frequencies (kept, interpolated, divided).
pub fn check_rope(rng: &mut Rng) -> CheckResult {
    use crate::ops::rope::{Llama3Scaling, Rope};
    let (b, t, nh, nkv, hs) = (2, 3, 2, 1, 6);
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 512.0,
    };
    let rope = Rope::new(10000.0, hs, Some(scaling));
    let pos0 = [0u32, 5];
    let n = b * t * (nh + 2 * nkv) * hs;
    let r = rng.normals(n, 1.0);
    let inputs = vec![rng.normals(n, 1.0)];
    let f = |x: &Inputs| {
        let mut y = x[0].clone();
        crate::ops::rope::forward(&mut y, &rope, &pos0, b, t, nh, nkv);
        dot(&y, &r)
    };
    let mut g = vec![r.clone()];
    crate::ops::rope::backward(&mut g[0], &rope, &pos0, b, t, nh, nkv);
    compare("rope (llama3 scaling, nkv < nh)", &inputs, f, &g, rng)
}

pub fn check_gelu(rng: &mut Rng) -> CheckResult {
    let n = 40;
    let r = rng.normals(n, 1.0);
    let inputs = vec![rng.normals(n, 2.0)];
    let f = |x: &Inputs| {
        let mut out = vec![0.0; n];
        crate::ops::gelu::forward(&mut out, &x[0]);
        dot(&out, &r)
    };
    let mut g = vec![vec![0.0; n]];
    crate::ops::gelu::backward(&mut g[0], &inputs[0], &r);
    compare("gelu", &inputs, f, &g, rng)
}

/// SwiGLU on packed [gate | up] rows, gates spread wide enough to reach both tails of the sigmoid.
pub fn check_swiglu(rng: &mut Rng) -> CheckResult {
    let (n, f) = (4, 5);
    let r = rng.normals(n * f, 1.0);
    let inputs = vec![rng.normals(n * 2 * f, 2.5)];
    let fwd = |x: &Inputs| {
        let mut out = vec![0.0; n * f];
        crate::ops::swiglu::forward(&mut out, &x[0], f);
        out
    };
    let mut g = vec![vec![0.0; n * 2 * f]];
    crate::ops::swiglu::backward(&mut g[0], &r, &inputs[0], f);
    compare("swiglu", &inputs, |x| dot(&fwd(x), &r), &g, rng)
}

pub fn check_residual(rng: &mut Rng) -> CheckResult {
    let n = 20;
    let r = rng.normals(n, 1.0);
    let inputs = vec![rng.normals(n, 1.0), rng.normals(n, 1.0)];
    let f = |x: &Inputs| {
        let mut out = vec![0.0; n];
        crate::ops::residual::add(&mut out, &x[0], &x[1]);
        dot(&out, &r)
    };
    // Backward of out = a + b: the gradient flows unchanged to both, accumulated into zeroed buffers.
    let mut g = vec![vec![0.0; n], vec![0.0; n]];
    for gi in &mut g {
        crate::ops::residual::accumulate(gi, &r);
    }
    compare("residual", &inputs, f, &g, rng)
}

/// Masked, temperature-scaled cross-entropy on padded logit rows (pad columns must get zero gradient).
pub fn check_crossentropy(rng: &mut Rng) -> CheckResult {
    let (n, v, vp, inv_temp) = (6, 9, 12, 1.0 / 0.7);
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    let mask = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    let weights: Vec<f64> = mask.iter().map(|m| m / 4.0).collect();
    let inputs = vec![rng.normals(n * vp, 2.0)];
    let f = |x: &Inputs| {
        let (mut losses, mut logits) = (vec![0.0; n], x[0].clone());
        crate::ops::crossentropy::forward_backward(
            &mut losses,
            &mut logits,
            &targets,
            &weights,
            v,
            vp,
            inv_temp,
            false,
        );
        dot(&losses, &weights)
    };
    let (mut losses, mut g) = (vec![0.0; n], inputs.clone());
    crate::ops::crossentropy::forward_backward(&mut losses, &mut g[0], &targets, &weights, v, vp, inv_temp, true);
    compare("crossentropy (masked)", &inputs, f, &g, rng)
}

/// The whole GPT-2 decoder: masked mean cross-entropy of a tiny model w.r.t. every parameter tensor.
pub fn check_model(rng: &mut Rng) -> CheckResult {
    check_decoder(rng, Config::gpt2(2, 2, 8, 11, 6), "gpt2 model (all parameters)")
}

/// A tiny Llama-family decoder: 4 query heads over `nkv` kv heads of size 4, Llama 3 rotary scaling active
/// at this context (original length 4: every wavelength past 4 positions is scaled), `qkv_bias` (Qwen2) or
/// not, the LM head `tied` or its own.
pub fn llama_tiny(family: crate::model::Family, nkv: usize, qkv_bias: bool, tied: bool) -> Config {
    use crate::ops::rope::Llama3Scaling;
    let scaling = Llama3Scaling {
        factor: 4.0,
        low_freq_factor: 1.0,
        high_freq_factor: 2.0,
        original_max_position_embeddings: 4.0,
    };
    Config {
        arch: crate::model::Arch::Llama(crate::model::LlamaShape {
            family,
            n_kv_head: nkv,
            intermediate_size: 12,
            rope_theta: 10_000.0,
            rope_scaling: (family == crate::model::Family::Llama).then_some(scaling),
            rms_norm_eps: 1e-5,
            qkv_bias,
            tie_word_embeddings: tied,
        }),
        ..Config::gpt2(2, 4, 16, 11, 6)
    }
}

/// The whole Llama-family decoder (GQA, RoPE with Llama 3 scaling, untied head; then Qwen2's q/k/v biases
/// with one kv head and a tied head): masked mean cross-entropy w.r.t. every parameter tensor.
pub fn check_llama_models(rng: &mut Rng) -> Vec<CheckResult> {
    use crate::model::Family;
    vec![
        check_decoder(rng, llama_tiny(Family::Llama, 2, false, false), "llama model (gqa, llama3 rope, untied)"),
        check_decoder(rng, llama_tiny(Family::Qwen2, 1, true, true), "qwen2 model (1 kv head, qkv bias, tied)"),
    ]
}

/// Masked mean cross-entropy of a tiny decoder of shape `cfg` w.r.t. every parameter tensor, at a
/// perturbed initialisation.
fn check_decoder(rng: &mut Rng, cfg: Config, name: &str) -> CheckResult {
    let be = Be::new();
    let (b, t) = (2, 5);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let mask: Vec<f32> = (0..b * t).map(|i| if i % 4 == 1 { 0.0 } else { 1.0 }).collect();
    let count: f32 = mask.iter().sum();
    let weights: Vec<f32> = mask.iter().map(|m| m / count).collect();
    // Perturb the default init so norm gains, biases and the residual path are all generic.
    let base = Decoder::<Be>::init(&be, cfg, rng.next_u64()).unwrap();
    let inputs: Inputs = base
        .to_host(&be)
        .into_iter()
        .map(|(_, v)| v.iter().map(|&x| x as f64 + rng.normal() * 0.1).collect())
        .collect();
    let model_at = |x: &Inputs| {
        let host: Vec<Vec<f32>> = x.iter().map(|v| v.iter().map(|&y| y as f32).collect()).collect();
        let mut m = Decoder::<Be>::from_host(&be, cfg, &host).unwrap();
        // from_host goes through f32; restore the exact f64 values.
        for (i, v) in x.iter().enumerate() {
            m.params.bufs[i][..v.len()].copy_from_slice(v);
        }
        m
    };
    let mut acts = Acts::new(&be, &cfg, b, t).unwrap();
    let f = |x: &Inputs| {
        let m = model_at(x);
        let mut a = Acts::new(&be, &cfg, b, t).unwrap();
        m.forward(&be, &mut a, &tokens, None, None).unwrap();
        m.lm_loss(&be, &mut a, &targets, &weights, 1.0, None).unwrap()
    };
    let m = model_at(&inputs);
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    m.forward(&be, &mut acts, &tokens, None, None).unwrap();
    m.lm_loss(&be, &mut acts, &targets, &weights, 1.0, Some(&mut grads)).unwrap();
    m.backward(&be, &mut acts, &mut grads);
    let analytic = param_grads(&grads, &inputs);
    compare(name, &inputs, f, &analytic, rng)
}

/// AdamW is not a gradient; it is checked against the closed form of one step from zero moments:
/// m = (1-b1) g, v = (1-b2) g^2, so the bias-corrected update is g / (|g| + eps) (plus decoupled decay).
pub fn check_adamw(rng: &mut Rng) -> CheckResult {
    use crate::ops::adamw::{step, AdamWParams};
    let n = 16;
    let p0 = rng.normals(n, 1.0);
    let g = rng.normals(n, 1.0);
    let h = AdamWParams { lr: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 0.5 };
    let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
    step(&mut p, &g, &mut m, &mut v, &h);
    let mut max_abs = 0.0f64;
    for i in 0..n {
        let gs = g[i] * h.grad_scale;
        let expect = p0[i] - h.lr * (gs / (gs.abs() + h.eps) + h.weight_decay * p0[i]);
        max_abs = max_abs.max((p[i] - expect).abs());
    }
    let tolerance = 1e-12;
    CheckResult {
        op: "adamw (closed form)".into(),
        entries: n,
        max_abs_err: max_abs,
        max_rel_err: max_abs,
        tolerance,
        ok: max_abs <= tolerance,
    }
}

/// The scalar (reward / value) head: L = sum_i coef_i * r_i over rows with nonzero coefficients.
pub fn check_scalar_head(rng: &mut Rng) -> CheckResult {
    use crate::model::ScalarHead;
    let be = Be::new();
    let (n, c) = (5, 6);
    let coef = vec![0.5, 0.0, -1.0, 0.0, 2.0];
    let inputs = vec![rng.normals(n * c, 1.0), rng.normals(c, 1.0), vec![rng.normal()]];
    let f = |x: &Inputs| {
        let head = ScalarHead::<Be> { w: x[1].clone(), b: x[2].clone() };
        dot(&head.forward(&be, &x[0], c).unwrap(), &coef)
    };
    let head = ScalarHead::<Be> { w: inputs[1].clone(), b: inputs[2].clone() };
    let mut g = head.zero_grads(&be).unwrap();
    let mut dh = vec![0.0; n * c];
    head.backward(&be, &mut g, &mut dh, &inputs[0], &coef, c).unwrap();
    compare("scalar head", &inputs, f, &vec![dh, g.w, g.b], rng)
}

/// Every check, in a fixed order, from one seed.
pub fn run_all(seed: u64) -> Vec<CheckResult> {
    let mut rng = Rng::new(seed);
    let checks: [fn(&mut Rng) -> CheckResult; 13] = [
        check_embedding,
        check_layernorm,
        check_rmsnorm,
        check_linear,
        check_attention,
        check_rope,
        check_gelu,
        check_swiglu,
        check_residual,
        check_crossentropy,
        check_adamw,
        check_scalar_head,
        check_model,
    ];
    let mut results: Vec<CheckResult> = checks.iter().map(|c| c(&mut rng)).collect();
    results.extend(check_llama_models(&mut rng));
    for (nh, nkv, hs) in [(4, 2, 64), (4, 1, 128), (6, 3, 4)] {
        results.push(check_attention_gqa(&mut rng, nh, nkv, hs));
    }
    results.push(losses::reward_pairwise());
    results.extend(losses::ppo());
    results.extend(losses::dpo());
    results.extend(losses::grpo());
    results
}

/// The table `rlhf gradcheck` prints.
pub fn format_table(results: &[CheckResult]) -> String {
    let mut s = table_header();
    results.iter().for_each(|r| s += &table_row(r));
    s
}

/// The column titles of [`format_table`].
pub fn table_header() -> String {
    format!("{:<40} {:>8} {:>12} {:>12} {:>12}  {}\n", "op", "entries", "max abs err", "max rel err", "tolerance", "ok")
}

/// One line of [`format_table`].
pub fn table_row(r: &CheckResult) -> String {
    format!(
        "{:<40} {:>8} {:>12.3e} {:>12.3e} {:>12.3e}  {}\n",
        r.op,
        r.entries,
        r.max_abs_err,
        r.max_rel_err,
        r.tolerance,
        if r.ok { "ok" } else { "FAIL" }
    )
}
