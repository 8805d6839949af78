//! The pure pieces of GRPO and RLOO, on host vectors (f64); their gradient checks are in
//! `crate::check::losses`.
//!
//! A group is the G answers sampled for one prompt, with rewards r_1..r_G (the reward model's score or a
//! judge's, minus the no-end penalty; in `--kl-in reward` mode also minus beta * sum_t (logp_t - ref_t)).
//! Every token of answer i carries the answer's advantage:
//!   GRPO (Shao et al. 2024)       A_i = (r_i - mean(r)) / (std(r) + 1e-4), std with the n-1 divisor;
//!                                 without the division (`--no-scale-std`, Dr. GRPO, Liu et al. 2025)
//!                                 A_i = r_i - mean(r)
//!   RLOO (Ahmadian et al. 2024)   A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean(r))
//! A group whose rewards are all equal teaches nothing (A = 0); its share is logged.
//!
//! The loss over a minibatch of answers, token t of answer i, c_it its weight (`--loss-norm`):
//!   L = sum_it c_it [ max(-A_i ratio_it, -A_i clip(ratio_it, 1-eps, 1+eps)) + beta k3_it ]
//!   k3_it = exp(ref_it - logp_it) - (ref_it - logp_it) - 1     (GRPO's per-token KL estimator: >= 0,
//!                                                              unbiased for KL(pi || ref) under pi)
//!   d k3_it / d logp_it = 1 - exp(ref_it - logp_it)
//!   answer:   c_it = 1 / (n_i M)     each answer's token mean, averaged over the M answers (GRPO)
//!   token:    c_it = 1 / sum_i n_i   every token alike (PPO's mean, DAPO's token-level loss)
//!   constant: c_it = 1 / (M Tmax)    a fixed normaliser, Tmax = --max-new-tokens (Dr. GRPO: no length bias)
//! The k3 term is present with `--kl-in loss` (GRPO) and absent with `--kl-in reward` (as PPO and RLOO).

use crate::pipeline::surrogate::{split_like, weighted_policy_loss};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// How a group's rewards become advantages (`--baseline`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// The group mean, and division by the group's standard deviation unless --no-scale-std (GRPO).
    Group,
    /// The mean of the other answers of the group (RLOO).
    Loo,
}

/// Where the KL to the reference enters (`--kl-in`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KlIn {
    /// beta * k3 per token, in the loss (GRPO).
    Loss,
    /// -beta * sum_t (logp - ref) added to each answer's reward before the advantages (PPO, RLOO).
    Reward,
}

/// How the loss averages over tokens (`--loss-norm`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossNorm {
    /// Each answer's token mean, averaged over answers (GRPO).
    Answer,
    /// The mean over every token of the minibatch (PPO, DAPO).
    Token,
    /// The sum over tokens divided by answers x --max-new-tokens (Dr. GRPO).
    Constant,
}

/// The advantages of one group's rewards.
pub fn group_advantages(rewards: &[f64], baseline: Baseline, scale_std: bool) -> Result<Vec<f64>> {
    let g = rewards.len();
    if g < 2 {
        bail!("a group of {g} answers has no baseline: --group must be at least 2");
    }
    let mean = rewards.iter().sum::<f64>() / g as f64;
    Ok(match baseline {
        Baseline::Group => {
            let s = if scale_std {
                let var = rewards.iter().map(|r| (r - mean) * (r - mean)).sum::<f64>() / (g - 1) as f64;
                1.0 / (var.sqrt() + 1e-4)
            } else {
                1.0
            };
            rewards.iter().map(|r| (r - mean) * s).collect()
        }
        Baseline::Loo => rewards.iter().map(|r| (r - mean) * g as f64 / (g - 1) as f64).collect(),
    })
}

/// The per-token weights c_it of `norm` for answers of the given lengths.
pub fn token_weights(lens: &[usize], norm: LossNorm, max_new_tokens: usize) -> Vec<f64> {
    let m = lens.len() as f64;
    let total: usize = lens.iter().sum();
    lens.iter()
        .flat_map(|&n| {
            let c = match norm {
                LossNorm::Answer => 1.0 / (n as f64 * m),
                LossNorm::Token => 1.0 / total as f64,
                LossNorm::Constant => 1.0 / (m * max_new_tokens as f64),
            };
            std::iter::repeat_n(c, n)
        })
        .collect()
}

/// The loss of a minibatch of answers (see the module doc) and what is logged of it.
pub struct GrpoLoss {
    pub loss: f64,
    /// dL/dlogp, per answer and token.
    pub grad: Vec<Vec<f64>>,
    pub clip_frac: f64,
    pub approx_kl: f64,
    pub max_ratio_dev: f64,
    /// Token mean of k3 (the KL to the reference the loss sees).
    pub k3: f64,
}

/// Inputs per answer i: `logp[i]`, `old[i]`, `reference[i]` per token, `adv[i]` the answer's advantage;
/// `beta` the k3 coefficient (0 with `--kl-in reward`).
#[allow(clippy::too_many_arguments)]
pub fn grpo_loss(
    logp: &[Vec<f64>],
    old: &[Vec<f64>],
    reference: &[Vec<f64>],
    adv: &[f64],
    clip: f64,
    beta: f64,
    norm: LossNorm,
    max_new_tokens: usize,
) -> Result<GrpoLoss> {
    if old.len() != logp.len() || reference.len() != logp.len() || adv.len() != logp.len() {
        bail!(
            "grpo_loss: {} answers of logprobs, {} old, {} reference, {} advantages",
            logp.len(),
            old.len(),
            reference.len(),
            adv.len()
        );
    }
    if let Some(i) = (0..logp.len()).find(|&i| old[i].len() != logp[i].len() || reference[i].len() != logp[i].len()) {
        bail!(
            "grpo_loss: answer {i} has {} tokens but {} old and {} reference logprobs",
            logp[i].len(),
            old[i].len(),
            reference[i].len()
        );
    }
    let lens: Vec<usize> = logp.iter().map(Vec::len).collect();
    let w = token_weights(&lens, norm, max_new_tokens);
    let a: Vec<f64> = adv.iter().zip(&lens).flat_map(|(&a, &n)| std::iter::repeat_n(a, n)).collect();
    let (lp, ref_flat) = (logp.concat(), reference.concat());
    let pl = weighted_policy_loss(&lp, &old.concat(), &a, &w, clip)?;
    let (mut loss, mut grad, mut k3_sum) = (pl.loss, pl.grad, 0.0);
    for i in 0..lp.len() {
        let d = ref_flat[i] - lp[i];
        let k3 = d.exp() - d - 1.0;
        k3_sum += k3;
        loss += beta * w[i] * k3;
        grad[i] += beta * w[i] * (1.0 - d.exp());
    }
    Ok(GrpoLoss {
        loss,
        grad: split_like(&grad, logp),
        clip_frac: pl.clip_frac,
        approx_kl: pl.approx_kl,
        max_ratio_dev: pl.max_ratio_dev,
        k3: k3_sum / lp.len() as f64,
    })
}
