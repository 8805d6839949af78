//! Rollouts, shared by the steps that sample (PPO, evaluation): sampled answers as episodes, laid out as a
//! right-padded [prompt + answer] batch ([`crate::data::batch::PaddedBatch`], whose doc gives the row of
//! each answer token); their log-probabilities under a model are [`crate::model::answer_logprobs`].

use crate::data::batch::PaddedBatch;
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

/// The reward of an answer as PPO and the evaluation use it: the reward model's score at its last token,
/// minus `penalty` when the answer never emitted `<|end|>` (the EOS trick, subtracted as TRL does, so a
/// cut answer is always worse than the same text scored as ended would be, never better).
pub fn penalised_score(score: f64, ended: bool, penalty: f64) -> f64 {
    if ended {
        score
    } else {
        score - penalty
    }
}

/// The gold score of an answer as PPO and the evaluation count it: the judge's score, or `unended` for an
/// answer that never emitted `<|end|>` (so running on to the length limit never pays).
pub fn gold_score(gold: f64, ended: bool, unended: f64) -> f64 {
    if ended {
        gold
    } else {
        unended
    }
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
