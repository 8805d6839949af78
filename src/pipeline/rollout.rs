//! Rollouts, shared by the steps that sample (PPO, evaluation): sampled answers as episodes, laid out as a
//! right-padded [prompt + answer] batch ([`crate::data::batch::PaddedBatch`], whose doc gives the row of
//! each answer token), and the log-probabilities of the answers under a model.

use crate::backend::Backend;
use crate::data::batch::PaddedBatch;
use crate::model::{Acts, Gpt2};
use crate::ops::Float;
use anyhow::{bail, Result};

/// A gold judge as the steps call it: the scores of (prompt, answer) texts, one per pair.
pub type GoldJudge<'a> = dyn FnMut(&[(String, String)]) -> Result<Vec<f64>> + 'a;

/// One sampled answer to one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub prompt: Vec<u32>,
    /// The answer, ending with the stop token when `ended`.
    pub answer: Vec<u32>,
    /// The rollout policy's temperature-scaled log-probability of each answer token.
    pub logprobs: Vec<f32>,
    pub ended: bool,
}

/// Episodes as one right-padded batch, one row each, as wide as the longest.
pub fn episode_batch(episodes: &[&Episode], pad: u32) -> Result<PaddedBatch> {
    for (i, e) in episodes.iter().enumerate() {
        if e.logprobs.len() != e.answer.len() {
            bail!("episode {i}: {} logprobs for {} answer tokens", e.logprobs.len(), e.answer.len());
        }
    }
    let pairs: Vec<(&[u32], &[u32])> = episodes.iter().map(|e| (e.prompt.as_slice(), e.answer.as_slice())).collect();
    PaddedBatch::fitted(&pairs, pad)
}

/// Per-token log-probabilities of every answer under `model` (temperature-scaled by `inv_temp`), by one
/// forward pass and the fused cross-entropy (no gradient). Leaves the forward's activations in `acts`.
pub fn answer_logprobs<B: Backend>(
    be: &B,
    model: &Gpt2<B>,
    acts: &mut Acts<B>,
    sb: &PaddedBatch,
    inv_temp: f64,
) -> Result<Vec<Vec<f64>>> {
    model.forward(be, acts, &sb.tokens, None, None)?;
    model.lm_loss(be, acts, &sb.targets, &vec![0.0; sb.b * sb.t], inv_temp, None)?;
    let losses: Vec<f64> = be.download(&acts.losses).iter().map(|x| -x.f64()).collect();
    Ok(sb.gather(&losses))
}
