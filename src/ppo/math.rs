//! The pure pieces of PPO, per token, on host vectors (f64). Everything here is a formula; the trainer
//! (`crate::ppo::trainer`) feeds it the rollout's numbers and passes the gradients it returns into the
//! model (the policy's through `Gpt2::lm_loss` weights, the value's through `ScalarHead::backward`).
//!
//! Notation for one answer of n tokens a_0..a_{n-1} (the last one is `<|end|>` when the answer ended;
//! nothing after it exists, padding is never part of an answer):
//!   logp_t      log pi(a_t | prefix) of the rollout policy, temperature-scaled
//!   ref_t       the same under the frozen reference (SFT) model
//!   v_t         the value model's estimate before a_t is chosen
//!   score       the reward model's scalar at a_{n-1} (or the fixed no-EOS penalty)
//!
//! Rewards      r_t = -beta (logp_t - ref_t)  +  [t = n-1] score
//! GAE          delta_t = r_t + gamma v_{t+1} - v_t   (v_n = 0: the episode ends with the answer)
//!              A_t = delta_t + gamma lambda A_{t+1},   A_n = 0;   returns R_t = A_t + v_t
//! Whitening    A <- (A - mean) / sqrt(var + 1e-8), mean and (population) variance over every valid token of
//!              the batch
//! Policy loss  ratio = exp(logp - logp_old);  L = mean_t max(-A ratio, -A clip(ratio, 1-eps, 1+eps))
//!              dL/dlogp_t = -A_t ratio_t / N where the unclipped term is the max (ties included), else 0
//! Value loss   vc = v_old + clip(v - v_old, -eps_v, eps_v);  L = 1/2 mean_t max((v-R)^2, (vc-R)^2)
//!              dL/dv_t = (v_t - R_t) / N where the unclipped term is the max (ties included), else 0
//!              (when the clipped term wins strictly, v is outside the clip range and vc is constant in v)
//! Statistics   approx KL = mean((ratio - 1) - log ratio)  (k3 estimator: >= 0, unbiased for KL(old||new));
//!              clip fraction = mean(|ratio - 1| > eps);  explained variance = 1 - Var(R - v) / Var(R)
//! KL control   adaptive (Ziegler et al. 2019):  e = clip(KL / target - 1, -0.2, 0.2);
//!              beta <- beta (1 + e n / horizon)  with n the episodes of the batch;  or a fixed beta.

use crate::gradcheck::{compare, CheckResult};
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Per-token rewards of one answer and the per-token KL terms logp - ref that went into them.
pub fn token_rewards(logp: &[f64], ref_logp: &[f64], score: f64, beta: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    if logp.len() != ref_logp.len() {
        bail!("token_rewards: {} policy logprobs but {} reference logprobs", logp.len(), ref_logp.len());
    }
    if logp.is_empty() {
        bail!("token_rewards: an answer with no tokens has no token to carry its score");
    }
    let kl: Vec<f64> = logp.iter().zip(ref_logp).map(|(a, b)| a - b).collect();
    let mut r: Vec<f64> = kl.iter().map(|k| -beta * k).collect();
    *r.last_mut().unwrap() += score;
    Ok((r, kl))
}

/// GAE over one answer: (advantages, returns). `rewards` and `values` cover the answer's valid tokens only.
pub fn gae(rewards: &[f64], values: &[f64], gamma: f64, lam: f64) -> Result<(Vec<f64>, Vec<f64>)> {
    if rewards.len() != values.len() {
        bail!("gae: {} rewards but {} values", rewards.len(), values.len());
    }
    let n = rewards.len();
    let mut adv = vec![0.0; n];
    let mut next_adv = 0.0;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lam * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((adv, ret))
}

/// Mean and population variance over every element of a ragged batch.
pub fn mean_var(xs: &[Vec<f64>]) -> (f64, f64) {
    let n = xs.iter().map(Vec::len).sum::<usize>();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = xs.iter().flatten().sum::<f64>() / n as f64;
    let var = xs.iter().flatten().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    (mean, var)
}

/// Whiten a ragged batch in place over all its (valid) elements: (x - mean) / sqrt(var + 1e-8).
pub fn whiten(xs: &mut [Vec<f64>]) {
    let (mean, var) = mean_var(xs);
    let s = 1.0 / (var + 1e-8).sqrt();
    xs.iter_mut().flatten().for_each(|x| *x = (*x - mean) * s);
}

/// The clipped surrogate over N tokens (flat, valid tokens only): (loss, dloss/dlogp, clip fraction, approx KL).
pub struct PolicyLoss {
    pub loss: f64,
    pub grad: Vec<f64>,
    pub clip_frac: f64,
    pub approx_kl: f64,
    /// max_t |ratio_t - 1| (the first-minibatch check reads it).
    pub max_ratio_dev: f64,
}

pub fn policy_loss(logp: &[f64], old_logp: &[f64], adv: &[f64], clip: f64) -> Result<PolicyLoss> {
    let n = logp.len();
    if old_logp.len() != n || adv.len() != n {
        bail!("policy_loss: {n} logprobs, {} old logprobs, {} advantages", old_logp.len(), adv.len());
    }
    if n == 0 {
        bail!("policy_loss: no valid tokens");
    }
    let inv = 1.0 / n as f64;
    let (mut loss, mut clipped, mut akl, mut dev) = (0.0, 0usize, 0.0, 0.0f64);
    let mut grad = vec![0.0; n];
    for i in 0..n {
        let log_ratio = logp[i] - old_logp[i];
        let ratio = log_ratio.exp();
        let l1 = -adv[i] * ratio;
        let l2 = -adv[i] * ratio.clamp(1.0 - clip, 1.0 + clip);
        if l1 >= l2 {
            loss += l1;
            grad[i] = -adv[i] * ratio * inv;
        } else {
            loss += l2;
        }
        clipped += ((ratio - 1.0).abs() > clip) as usize;
        akl += (ratio - 1.0) - log_ratio;
        dev = dev.max((ratio - 1.0).abs());
    }
    Ok(PolicyLoss { loss: loss * inv, grad, clip_frac: clipped as f64 * inv, approx_kl: akl * inv, max_ratio_dev: dev })
}

/// The clipped value loss over N tokens: (loss, dloss/dvalues, fraction of tokens where the clip won).
pub fn value_loss(values: &[f64], old_values: &[f64], returns: &[f64], clip: f64) -> Result<(f64, Vec<f64>, f64)> {
    let n = values.len();
    if old_values.len() != n || returns.len() != n {
        bail!("value_loss: {n} values, {} old values, {} returns", old_values.len(), returns.len());
    }
    if n == 0 {
        bail!("value_loss: no valid tokens");
    }
    let inv = 1.0 / n as f64;
    let (mut loss, mut clipped) = (0.0, 0usize);
    let mut grad = vec![0.0; n];
    for i in 0..n {
        let vc = old_values[i] + (values[i] - old_values[i]).clamp(-clip, clip);
        let l1 = (values[i] - returns[i]).powi(2);
        let l2 = (vc - returns[i]).powi(2);
        if l1 >= l2 {
            loss += l1;
            grad[i] = (values[i] - returns[i]) * inv;
        } else {
            loss += l2;
            clipped += 1;
        }
    }
    Ok((0.5 * loss * inv, grad, clipped as f64 * inv))
}

/// 1 - Var(returns - values) / Var(returns); NaN when the returns do not vary.
pub fn explained_variance(values: &[f64], returns: &[f64]) -> f64 {
    let (_, vr) = mean_var(&[returns.to_vec()]);
    let diff: Vec<f64> = returns.iter().zip(values).map(|(r, v)| r - v).collect();
    let (_, vd) = mean_var(&[diff]);
    if vr == 0.0 {
        f64::NAN
    } else {
        1.0 - vd / vr
    }
}

/// The KL coefficient beta: fixed, or adapted towards a target KL (Ziegler et al.).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    pub beta: f64,
    /// None: fixed beta.
    pub target: Option<f64>,
    pub horizon: f64,
}

impl KlController {
    pub fn adaptive(init: f64, target: f64, horizon: f64) -> Self {
        KlController { beta: init, target: Some(target), horizon }
    }
    pub fn fixed(beta: f64) -> Self {
        KlController { beta, target: None, horizon: 0.0 }
    }
    /// Update after a batch of `n_episodes` answers whose mean KL to the reference was `kl`.
    pub fn update(&mut self, kl: f64, n_episodes: usize) {
        if let Some(target) = self.target {
            let e = (kl / target - 1.0).clamp(-0.2, 0.2);
            self.beta *= 1.0 + e * n_episodes as f64 / self.horizon;
        }
    }
}

// ---- gradient checks (f64 finite differences; inputs kept away from the clip kinks) ----

fn randn(rng: &mut Rng, n: usize, std: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * std).collect()
}

/// Random (logp, old_logp, adv) whose ratios sit inside and outside the clip range but not within 1e-3
/// of its edges (where the loss has a kink and finite differences straddle it).
fn policy_inputs(rng: &mut Rng, n: usize, clip: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let old = randn(rng, n, 1.0).iter().map(|x| x - 3.0).collect::<Vec<_>>();
    let mut logp = Vec::with_capacity(n);
    for &o in &old {
        loop {
            let d = rng.normal() * 0.3;
            let r = d.exp();
            if (r - (1.0 - clip)).abs() > 1e-3 && (r - (1.0 + clip)).abs() > 1e-3 {
                logp.push(o + d);
                break;
            }
        }
    }
    (logp, old, randn(rng, n, 1.0))
}

/// The clipped surrogate's gradient wrt logp.
pub fn check_policy_loss(rng: &mut Rng) -> CheckResult {
    let (clip, n) = (0.2, 24);
    let (logp, old, adv) = policy_inputs(rng, n, clip);
    let g = policy_loss(&logp, &old, &adv, clip).unwrap().grad;
    compare(
        "ppo clipped policy loss",
        &vec![logp],
        |x| policy_loss(&x[0], &old, &adv, clip).unwrap().loss,
        &vec![g],
        rng,
    )
}

/// The clipped value loss's gradient wrt the values.
pub fn check_value_loss(rng: &mut Rng) -> CheckResult {
    let (clip, n) = (0.2, 24);
    let old = randn(rng, n, 1.0);
    let ret = randn(rng, n, 1.0);
    let values: Vec<f64> = old
        .iter()
        .map(|&o| loop {
            let d = rng.normal() * 0.4;
            if (d.abs() - clip).abs() > 1e-3 {
                break o + d;
            }
        })
        .collect();
    let g = value_loss(&values, &old, &ret, clip).unwrap().1;
    compare("ppo clipped value loss", &vec![values], |x| value_loss(&x[0], &old, &ret, clip).unwrap().0, &vec![g], rng)
}

/// The policy loss through the whole decoder: logp from `lm_loss`, the per-token weights -dL/dlogp passed
/// back into `lm_loss` (the trainer's path), checked against finite differences of every parameter.
pub fn check_policy_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::{Backend, Cpu};
    use crate::model::{Acts, Config, Gpt2, Tensors};
    type Be = Cpu<f64>;
    let be = Be::new();
    let cfg = Config { n_layer: 1, n_head: 2, n_embd: 8, vocab_size: 11, n_positions: 6 };
    let (b, t, clip, inv_temp) = (2, 5, 0.2, 1.0 / 0.8);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    // Valid (answer) positions; the others are prompt or padding and get weight 0.
    let valid: Vec<usize> = vec![2, 3, 4, 6, 7];
    let base = Gpt2::<Be>::init(&be, cfg, rng.next_u64()).unwrap();
    let inputs: Vec<Vec<f64>> = base
        .to_host(&be)
        .into_iter()
        .map(|(_, v)| v.iter().map(|&x| x as f64 + rng.normal() * 0.1).collect())
        .collect();
    let model_at = |x: &Vec<Vec<f64>>| {
        let mut m = base_clone(&be, cfg, x);
        for (i, v) in x.iter().enumerate() {
            m.params.bufs[i][..v.len()].copy_from_slice(v);
        }
        m
    };
    let logp_of = |m: &Gpt2<Be>, a: &mut Acts<Be>| {
        m.forward(&be, a, &tokens, None, None).unwrap();
        m.lm_loss(&be, a, &targets, &vec![0.0; b * t], inv_temp, None).unwrap();
        let l = be.download(&a.losses);
        valid.iter().map(|&i| -l[i]).collect::<Vec<f64>>()
    };
    let m0 = model_at(&inputs);
    let mut acts = Acts::new(&be, &cfg, b, t).unwrap();
    let lp0 = logp_of(&m0, &mut acts);
    // Old logprobs a little off the current ones, so some ratios clip (kept away from the kinks).
    let mut old = Vec::new();
    for &l in &lp0 {
        let d = loop {
            let d = rng.normal() * 0.3;
            if (d.exp() - 1.0).abs() < clip - 0.02 || (d.exp() - 1.0).abs() > clip + 0.02 {
                break d;
            }
        };
        old.push(l - d);
    }
    let adv = randn(rng, valid.len(), 1.0);
    let f = |x: &Vec<Vec<f64>>| {
        let m = model_at(x);
        let mut a = Acts::new(&be, &cfg, b, t).unwrap();
        policy_loss(&logp_of(&m, &mut a), &old, &adv, clip).unwrap().loss
    };
    let pl = policy_loss(&lp0, &old, &adv, clip).unwrap();
    let mut weights = vec![0.0f32; b * t];
    for (k, &i) in valid.iter().enumerate() {
        weights[i] = -pl.grad[k] as f32;
    }
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    m0.forward(&be, &mut acts, &tokens, None, None).unwrap();
    m0.lm_loss(&be, &mut acts, &targets, &weights, inv_temp, Some(&mut grads)).unwrap();
    m0.backward(&be, &mut acts, &mut grads);
    let analytic: Vec<Vec<f64>> = grads.bufs.iter().zip(&inputs).map(|(g, x)| g[..x.len()].to_vec()).collect();
    compare("ppo policy loss through the decoder", &inputs, f, &analytic, rng)
}

fn base_clone(
    be: &crate::backend::Cpu<f64>,
    cfg: crate::model::Config,
    x: &[Vec<f64>],
) -> crate::model::Gpt2<crate::backend::Cpu<f64>> {
    let host: Vec<Vec<f32>> = x.iter().map(|v| v.iter().map(|&y| y as f32).collect()).collect();
    crate::model::Gpt2::from_host(be, cfg, &host).unwrap()
}

/// The entropy op (`crate::ops::entropy`, the entropy bonus): L = sum_i coef_i H_i wrt the logits,
/// with padded rows (the pad columns must get zero gradient).
pub fn check_entropy(rng: &mut Rng) -> CheckResult {
    let (n, v, vp, inv_temp) = (5, 9, 12, 1.0 / 0.7);
    let coef = vec![0.5, 0.0, -1.0, 2.0, 0.25];
    let inputs = vec![randn(rng, n * vp, 2.0)];
    let f = |x: &Vec<Vec<f64>>| {
        let (mut h, mut d) = (vec![0.0; n], vec![0.0; n * vp]);
        crate::ops::entropy::forward_backward(&mut h, &mut d, &x[0], &coef, v, vp, inv_temp, false);
        h.iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>()
    };
    let (mut h, mut d) = (vec![0.0; n], vec![0.0; n * vp]);
    crate::ops::entropy::forward_backward(&mut h, &mut d, &inputs[0], &coef, v, vp, inv_temp, true);
    compare("entropy (softmax, padded rows)", &inputs, f, &vec![d], rng)
}

/// A tiny f64 decoder, its parameters perturbed off the init (so every path is generic), and a two-episode
/// batch with different prompt and answer lengths (padding included).
fn tiny_f64(rng: &mut Rng) -> (crate::model::Config, Vec<Vec<f64>>, super::rollout::SeqBatch) {
    use super::rollout::{Episode, SeqBatch};
    let cfg = crate::model::Config { n_layer: 1, n_head: 2, n_embd: 8, vocab_size: 11, n_positions: 8 };
    let be = crate::backend::Cpu::<f64>::new();
    let base = crate::model::Gpt2::init(&be, cfg, rng.next_u64()).unwrap();
    let params: Vec<Vec<f64>> = base
        .to_host(&be)
        .into_iter()
        .map(|(_, v)| v.iter().map(|&x| x as f64 + rng.normal() * 0.1).collect())
        .collect();
    let ep = |p: &[u32], a: &[u32]| Episode {
        prompt: p.to_vec(),
        answer: a.to_vec(),
        logprobs: vec![0.0; a.len()],
        ended: true,
    };
    let (e1, e2) = (ep(&[3, 4], &[5, 6, 1]), ep(&[7, 8, 9], &[2, 1]));
    (cfg, params, SeqBatch::new(&[&e1, &e2], 0).unwrap())
}

fn model_f64(cfg: crate::model::Config, x: &[Vec<f64>]) -> crate::model::Gpt2<crate::backend::Cpu<f64>> {
    let be = crate::backend::Cpu::<f64>::new();
    let mut m = base_clone(&be, cfg, x);
    for (i, v) in x.iter().enumerate() {
        m.params.bufs[i][..v.len()].copy_from_slice(v);
    }
    m
}

/// The clipped value loss through the value head and the decoder (the trainer's path: dL/dv scattered to
/// the answer rows, head backward into dlnf, trunk backward), against every parameter and the head.
pub fn check_value_through_model(rng: &mut Rng) -> CheckResult {
    use super::rollout::TrunkHead;
    use crate::backend::{Backend, Cpu};
    use crate::model::{Acts, ScalarHead, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, params, sb) = tiny_f64(rng);
    let c = cfg.n_embd;
    let nt = params.len();
    let mut inputs = params;
    inputs.push(randn(rng, c, 0.3));
    inputs.push(vec![0.1]);
    let values_at = |x: &Vec<Vec<f64>>| {
        let vm = TrunkHead {
            trunk: model_f64(cfg, &x[..nt]),
            head: ScalarHead::<Cpu<f64>> { w: x[nt].clone(), b: x[nt + 1].clone() },
        };
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        vm.values(&be, &mut a, &sb).unwrap().concat()
    };
    let v0 = values_at(&inputs);
    let old: Vec<f64> = v0
        .iter()
        .map(|&v| loop {
            let d = rng.normal() * 0.3;
            if (d.abs() - 0.2).abs() > 0.02 {
                break v - d;
            }
        })
        .collect();
    let ret = randn(rng, v0.len(), 1.0);
    let f = |x: &Vec<Vec<f64>>| value_loss(&values_at(x), &old, &ret, 0.2).unwrap().0;
    let vm = TrunkHead {
        trunk: model_f64(cfg, &inputs[..nt]),
        head: ScalarHead::<Cpu<f64>> { w: inputs[nt].clone(), b: inputs[nt + 1].clone() },
    };
    let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
    let v = vm.values(&be, &mut a, &sb).unwrap();
    let g = value_loss(&v.concat(), &old, &ret, 0.2).unwrap().1;
    let mut off = 0;
    let per: Vec<Vec<f64>> = v
        .iter()
        .map(|e| {
            let r = g[off..off + e.len()].to_vec();
            off += e.len();
            r
        })
        .collect();
    let dr = sb.scatter(&per);
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    let mut hg = vm.head.zero_grads(&be).unwrap();
    be.fill_zero(&mut a.dlnf);
    vm.head.backward(&be, &mut hg, &mut a.dlnf, &a.lnf, &dr, c).unwrap();
    vm.trunk.backward(&be, &mut a, &mut grads);
    let mut analytic: Vec<Vec<f64>> = grads.bufs.iter().zip(&inputs).map(|(g, x)| g[..x.len()].to_vec()).collect();
    analytic.push(hg.w);
    analytic.push(hg.b);
    compare("ppo value loss through head + decoder", &inputs, f, &analytic, rng)
}

/// The entropy bonus through the decoder (the trainer's `entropy_term` after `lm_loss`): L = -c mean H.
pub fn check_entropy_through_model(rng: &mut Rng) -> CheckResult {
    use crate::backend::Cpu;
    use crate::model::{Acts, Tensors};
    let be = Cpu::<f64>::new();
    let (cfg, inputs, sb) = tiny_f64(rng);
    let (inv_temp, coef) = (1.0 / 0.9, 0.7);
    let run = |x: &Vec<Vec<f64>>, grads: Option<&mut Tensors<Cpu<f64>>>| {
        let m = model_f64(cfg, x);
        let mut a = Acts::new(&be, &cfg, sb.b, sb.t).unwrap();
        m.forward(&be, &mut a, &sb.tokens, None, None).unwrap();
        let zero = vec![0.0f32; sb.b * sb.t];
        match grads {
            Some(g) => {
                m.lm_loss(&be, &mut a, &sb.targets, &zero, inv_temp, Some(g)).unwrap();
                let h = super::trainer::entropy_term(&be, &m, &mut a, &sb, g, inv_temp, coef).unwrap();
                m.backward(&be, &mut a, g);
                -coef * h
            }
            None => {
                let mut g = Tensors::zeros(&be, &cfg).unwrap();
                -coef * super::trainer::entropy_term(&be, &m, &mut a, &sb, &mut g, inv_temp, 0.0).unwrap()
            }
        }
    };
    let mut grads = Tensors::zeros(&be, &cfg).unwrap();
    run(&inputs, Some(&mut grads));
    let analytic: Vec<Vec<f64>> = grads.bufs.iter().zip(&inputs).map(|(g, x)| g[..x.len()].to_vec()).collect();
    compare("ppo entropy bonus through the decoder", &inputs, |x| run(x, None), &analytic, rng)
}

/// Every PPO gradient check (the lead wires these into `rlhf gradcheck`).
pub fn gradchecks() -> Vec<CheckResult> {
    let mut rng = Rng::new(4242);
    vec![
        check_policy_loss(&mut rng),
        check_value_loss(&mut rng),
        check_policy_through_model(&mut rng),
        check_entropy(&mut rng),
        check_value_through_model(&mut rng),
        check_entropy_through_model(&mut rng),
    ]
}
