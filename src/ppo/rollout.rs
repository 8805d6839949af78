//! Rollouts: sampled answers laid out as right-padded [prompt + answer] batches, and the forward passes
//! that read per-token log-probabilities, values and the reward model's score from them.
//!
//! Layout of episode i (prompt p_i tokens, answer n_i tokens, the last one `<|end|>` when it ended):
//!   tokens [i, k]  = seq_i[k] for k < p_i + n_i, then the pad id
//!   targets[i, k]  = seq_i[k+1] for k + 1 < p_i + n_i, then the pad id (never weighted)
//! Answer token j (0 <= j < n_i) is predicted at row i*T + p_i + j - 1: its log-probability and the value
//! of the state before it are both read there. The reward model reads the answer's last token, row
//! i*T + p_i + n_i - 1 (its `<|end|>`). Nothing after an answer's last token is ever read or weighted, and
//! causal attention keeps the padding out of every row that is.

use crate::backend::Backend;
use crate::checkpoint::{Checkpoint, ModelKind, NamedTensor};
use crate::model::{Acts, Config, Gpt2, ScalarHead};
use crate::ops::Float;
use anyhow::{bail, Context, Result};

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

/// A right-padded batch of episodes (see the module doc for the layout).
pub struct SeqBatch {
    pub b: usize,
    pub t: usize,
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    pub prompt_len: Vec<usize>,
    pub answer_len: Vec<usize>,
}

impl SeqBatch {
    pub fn new(episodes: &[&Episode], pad: u32) -> Result<SeqBatch> {
        if episodes.is_empty() {
            bail!("an empty batch of episodes");
        }
        for (i, e) in episodes.iter().enumerate() {
            if e.prompt.is_empty() || e.answer.is_empty() {
                bail!("episode {i} has an empty prompt ({}) or answer ({})", e.prompt.len(), e.answer.len());
            }
            if e.logprobs.len() != e.answer.len() {
                bail!("episode {i}: {} logprobs for {} answer tokens", e.logprobs.len(), e.answer.len());
            }
        }
        let b = episodes.len();
        let t = episodes.iter().map(|e| e.prompt.len() + e.answer.len()).max().unwrap();
        let (mut tokens, mut targets) = (vec![pad; b * t], vec![pad; b * t]);
        for (i, e) in episodes.iter().enumerate() {
            let seq: Vec<u32> = e.prompt.iter().chain(&e.answer).copied().collect();
            tokens[i * t..i * t + seq.len()].copy_from_slice(&seq);
            targets[i * t..i * t + seq.len() - 1].copy_from_slice(&seq[1..]);
        }
        Ok(SeqBatch {
            b,
            t,
            tokens,
            targets,
            prompt_len: episodes.iter().map(|e| e.prompt.len()).collect(),
            answer_len: episodes.iter().map(|e| e.answer.len()).collect(),
        })
    }

    /// The row predicting answer token j of episode i (where its logprob and the value before it live).
    pub fn answer_row(&self, i: usize, j: usize) -> usize {
        i * self.t + self.prompt_len[i] + j - 1
    }

    /// The row of episode i's last answer token (where the reward model reads).
    pub fn last_row(&self, i: usize) -> usize {
        i * self.t + self.prompt_len[i] + self.answer_len[i] - 1
    }

    /// Per-episode values at the answer rows of a flat [B*T] vector.
    pub fn gather(&self, flat: &[f64]) -> Vec<Vec<f64>> {
        (0..self.b).map(|i| (0..self.answer_len[i]).map(|j| flat[self.answer_row(i, j)]).collect()).collect()
    }

    /// A flat [B*T] vector holding per-episode, per-answer-token values at their rows, zero elsewhere.
    pub fn scatter(&self, per_token: &[Vec<f64>]) -> Vec<f64> {
        let mut out = vec![0.0; self.b * self.t];
        for (i, v) in per_token.iter().enumerate() {
            for (j, &x) in v.iter().enumerate() {
                out[self.answer_row(i, j)] = x;
            }
        }
        out
    }
}

/// Per-token log-probabilities of every answer under `model` (temperature-scaled by `inv_temp`), by one
/// forward pass and the fused cross-entropy (no gradient). Leaves the forward's activations in `acts`.
pub fn answer_logprobs<B: Backend>(
    be: &B,
    model: &Gpt2<B>,
    acts: &mut Acts<B>,
    sb: &SeqBatch,
    inv_temp: f64,
) -> Result<Vec<Vec<f64>>> {
    model.forward(be, acts, &sb.tokens, None, None)?;
    model.lm_loss(be, acts, &sb.targets, &vec![0.0; sb.b * sb.t], inv_temp, None)?;
    let losses: Vec<f64> = be.download(&acts.losses).iter().map(|x| -x.f64()).collect();
    Ok(sb.gather(&losses))
}

/// A decoder with a scalar head: the value model (and, until `crate::reward` lands, the frozen reward
/// model's loaded form; the head reads `score.weight` [1, C] and `score.bias` [1] of a reward checkpoint).
pub struct TrunkHead<B: Backend> {
    pub trunk: Gpt2<B>,
    pub head: ScalarHead<B>,
}

impl<B: Backend> TrunkHead<B> {
    /// The head's output at every row [B*T] after a forward pass over the batch.
    pub fn all_rows(&self, be: &B, acts: &mut Acts<B>, sb: &SeqBatch) -> Result<Vec<f64>> {
        self.trunk.forward(be, acts, &sb.tokens, None, None)?;
        self.head.forward(be, &acts.lnf, self.trunk.cfg.n_embd)
    }

    /// Values before each answer token.
    pub fn values(&self, be: &B, acts: &mut Acts<B>, sb: &SeqBatch) -> Result<Vec<Vec<f64>>> {
        Ok(sb.gather(&self.all_rows(be, acts, sb)?))
    }

    /// The score of each episode, read at its answer's last token.
    pub fn scores(&self, be: &B, acts: &mut Acts<B>, sb: &SeqBatch) -> Result<Vec<f64>> {
        let all = self.all_rows(be, acts, sb)?;
        Ok((0..sb.b).map(|i| all[sb.last_row(i)]).collect())
    }

    /// A reward-kind checkpoint of this model (decoder + `score.weight`, `score.bias`).
    pub fn to_checkpoint(&self, be: &B) -> Result<Checkpoint> {
        let (w, b) = self.head.to_host(be);
        let c = self.trunk.cfg.n_embd;
        let extra =
            vec![NamedTensor::new("score.weight", vec![1, c], w), NamedTensor::new("score.bias", vec![1], vec![b])];
        let mut ck = Checkpoint::from_model(be, &self.trunk, ModelKind::Reward);
        ck.extra = extra;
        ck.validate()?;
        Ok(ck)
    }

    /// Load a reward-kind checkpoint; `what` names it in errors.
    pub fn from_checkpoint(be: &B, ck: &Checkpoint, what: &str) -> Result<Self> {
        ck.expect_kind(ModelKind::Reward, what)?;
        let trunk = ck.to_model(be)?;
        let c = ck.config.n_embd;
        let w = ck.get("score.weight").with_context(|| format!("{what}: reward checkpoint has no 'score.weight'"))?;
        if w.numel() != c {
            bail!("{what}: 'score.weight' has shape {:?}, expected [1, {c}]", w.shape);
        }
        let b = ck.get("score.bias").map_or(0.0, |t| t.data.first().copied().unwrap_or(0.0));
        Ok(TrunkHead { trunk, head: ScalarHead::from_host(be, &w.data, b)? })
    }

    pub fn cfg(&self) -> Config {
        self.trunk.cfg
    }
}

/// An exact copy of a model (through host f32, which is exact for an f32 backend).
pub fn clone_model<B: Backend>(be: &B, model: &Gpt2<B>) -> Result<Gpt2<B>> {
    let host: Vec<Vec<f32>> = model.to_host(be).into_iter().map(|(_, d)| d).collect();
    Gpt2::from_host(be, model.cfg, &host)
}

pub fn clone_trunk_head<B: Backend>(be: &B, m: &TrunkHead<B>) -> Result<TrunkHead<B>> {
    let (w, b) = m.head.to_host(be);
    Ok(TrunkHead { trunk: clone_model(be, &m.trunk)?, head: ScalarHead::from_host(be, &w, b)? })
}
