//! The pure pieces of PPO, per token, on host vectors (f64). Everything here is a formula; the trainer
//! (`crate::pipeline::ppo::trainer`) feeds it the rollout's numbers and passes the gradients it returns into the
//! model (the policy's through `Decoder::lm_loss` weights, the value's through `ScalarHead::backward`).
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
//! Policy loss  the clipped surrogate with every token weighted 1/N ([`crate::pipeline::surrogate`])
//! Value loss   vc = v_old + clip(v - v_old, -eps_v, eps_v);  L = 1/2 mean_t max((v-R)^2, (vc-R)^2)
//!              dL/dv_t = (v_t - R_t) / N where the unclipped term is the max (ties included), else 0
//!              (when the clipped term wins strictly, v is outside the clip range and vc is constant in v)
//! Statistics   explained variance = 1 - Var(R - v) / Var(R)
//! KL control   adaptive (Ziegler et al. 2019):  e = clip(KL / target - 1, -0.2, 0.2);
//!              beta <- beta (1 + e n / horizon)  with n the episodes of the batch;  or a fixed beta.

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
