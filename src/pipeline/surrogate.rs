//! The clipped policy-gradient objective, shared by the steps that update a policy on its own samples (PPO
//! and GRPO/RLOO), and the check that the training forward pass reproduces the rollout's log-probs.
//!
//! Over the valid answer tokens t of a minibatch, with per-token weights c_t (how the step averages):
//!   ratio_t = exp(logp_t - logp_old_t)
//!   L = sum_t c_t max(-A_t ratio_t, -A_t clip(ratio_t, 1-eps, 1+eps))
//!   dL/dlogp_t = -c_t A_t ratio_t where the unclipped term is the max (ties included), else 0
//! PPO weighs every token of the minibatch alike (c_t = 1/N); GRPO averages within each answer first.
//! Statistics (unweighted token means): approx KL = mean((ratio - 1) - log ratio) (the k3 estimator of
//! KL(old || new): >= 0), clip fraction = mean(|ratio - 1| > eps), and max |ratio - 1|.

use crate::backend::Backend;
use crate::pipeline::rollout::Episode;
use anyhow::{bail, Result};

/// The clipped surrogate over N tokens: loss, dloss/dlogp and the statistics of the module doc.
pub struct PolicyLoss {
    pub loss: f64,
    pub grad: Vec<f64>,
    pub clip_frac: f64,
    pub approx_kl: f64,
    /// max_t |ratio_t - 1| (the first-minibatch check reads it).
    pub max_ratio_dev: f64,
}

/// The surrogate with every token weighted 1/N (PPO's token mean).
pub fn policy_loss(logp: &[f64], old_logp: &[f64], adv: &[f64], clip: f64) -> Result<PolicyLoss> {
    let w = vec![1.0 / logp.len().max(1) as f64; logp.len()];
    weighted_policy_loss(logp, old_logp, adv, &w, clip)
}

/// The surrogate with per-token weights `weight` (flat, valid tokens only).
pub fn weighted_policy_loss(
    logp: &[f64],
    old_logp: &[f64],
    adv: &[f64],
    weight: &[f64],
    clip: f64,
) -> Result<PolicyLoss> {
    let n = logp.len();
    if old_logp.len() != n || adv.len() != n || weight.len() != n {
        bail!(
            "policy_loss: {n} logprobs, {} old logprobs, {} advantages, {} weights",
            old_logp.len(),
            adv.len(),
            weight.len()
        );
    }
    if n == 0 {
        bail!("policy_loss: no valid tokens");
    }
    let (mut loss, mut clipped, mut akl, mut dev) = (0.0, 0usize, 0.0, 0.0f64);
    let mut grad = vec![0.0; n];
    for i in 0..n {
        let log_ratio = logp[i] - old_logp[i];
        let ratio = log_ratio.exp();
        let l1 = -adv[i] * ratio;
        let l2 = -adv[i] * ratio.clamp(1.0 - clip, 1.0 + clip);
        if l1 >= l2 {
            loss += weight[i] * l1;
            grad[i] = -weight[i] * adv[i] * ratio;
        } else {
            loss += weight[i] * l2;
        }
        clipped += ((ratio - 1.0).abs() > clip) as usize;
        akl += (ratio - 1.0) - log_ratio;
        dev = dev.max((ratio - 1.0).abs());
    }
    let inv = 1.0 / n as f64;
    Ok(PolicyLoss { loss, grad, clip_frac: clipped as f64 * inv, approx_kl: akl * inv, max_ratio_dev: dev })
}

/// Units of the compute type's roundoff the first-minibatch ratio may deviate by in a compute type
/// narrower than f32 (see [`check_first_ratio`]).
const RATIO_ROUNDOFFS: f64 = 16.0;

/// At the first minibatch of the first epoch the policy has not moved, so every ratio must be 1: an error
/// unless max |ratio - 1| < `tol`, naming the worst token. `tol` (1e-4 by default) covers the rounding
/// between the KV-cached sampler and the full training forward (~1e-6 in f32); in bf16 compute (a GPU) an
/// activation that rounds to the other neighbour in one path moves a log-prob by a few bf16 steps, so the
/// bound there is 16 units of the compute type's roundoff (6%). The bugs this is for (temperature,
/// padding, shifted positions) move log-probs by 0.1..1.
pub fn check_first_ratio<B: Backend>(
    be: &B,
    max_ratio_dev: f64,
    tol: f64,
    logp: &[Vec<f64>],
    episodes: &[&Episode],
) -> Result<()> {
    let narrow = be.roundoff() > f32::EPSILON as f64;
    let tol = if narrow { tol.max(RATIO_ROUNDOFFS * be.roundoff()) } else { tol };
    if max_ratio_dev.is_nan() || max_ratio_dev >= tol {
        let (i, j, a, b) = worst_logprob(logp, episodes);
        bail!(
            "ratio check failed at the first minibatch: max |ratio - 1| = {max_ratio_dev:.3e} >= {tol:.0e}; the training forward and the rollout disagree (episode {i} token {j}: training logprob {a:.6}, rollout {b:.6}); check temperature scaling and padding"
        );
    }
    Ok(())
}

/// (episode, token, training logprob, rollout logprob) of the largest disagreement.
fn worst_logprob(logp: &[Vec<f64>], eps: &[&Episode]) -> (usize, usize, f64, f64) {
    let mut best = (0, 0, 0.0, 0.0);
    let mut worst = -1.0;
    for (i, (lp, e)) in logp.iter().zip(eps).enumerate() {
        for (j, (&a, &b)) in lp.iter().zip(&e.logprobs).enumerate() {
            let d = (a - b as f64).abs();
            if d > worst {
                worst = d;
                best = (i, j, a, b as f64);
            }
        }
    }
    best
}

/// Split a flat vector into the ragged shape of `like`.
pub fn split_like(flat: &[f64], like: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut off = 0;
    like.iter()
        .map(|v| {
            let r = flat[off..off + v.len()].to_vec();
            off += v.len();
            r
        })
        .collect()
}
