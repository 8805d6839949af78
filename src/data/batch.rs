//! Batches as the model sees them: right-padded [prompt + answer] rows, language-model batches with
//! per-token loss weights, and the seeded epoch order every step draws its examples from.
//!
//! Layout of row i of a [`PaddedBatch`] (prompt p_i tokens, answer n_i tokens):
//!   tokens [i, k]  = seq_i[k] for k < p_i + n_i, then the pad id
//!   targets[i, k]  = seq_i[k+1] for k + 1 < p_i + n_i, then the pad id (never weighted)
//! Answer token j (0 <= j < n_i) is predicted at row i*T + p_i + j - 1: its log-probability, its loss weight
//! and the value of the state before it all live there. A scalar model reads the answer's last token, row
//! i*T + p_i + n_i - 1 (its `<|end|>`). Nothing after an answer's last token is ever read or weighted, and
//! causal attention keeps the padding out of every row that is. Rows past the given pairs are all padding.

use crate::util::rng::Rng;
use anyhow::{bail, Result};

/// A (prompt, answer) token pair, already in the chat format.
pub type Pair = (Vec<u32>, Vec<u32>);

/// One language-model batch: inputs and targets [B*T] and the per-token loss weights (summing to 1 over
/// the positions that count: a mean over all tokens when pretraining, over answer tokens for SFT).
#[derive(Clone, Debug, PartialEq)]
pub struct LmBatch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
}

impl LmBatch {
    /// Every position weighted equally.
    pub fn uniform(inputs: Vec<u32>, targets: Vec<u32>) -> LmBatch {
        let n = inputs.len();
        LmBatch { inputs, targets, weights: vec![1.0 / n as f32; n] }
    }
}

/// Right-padded [prompt + answer] rows (see the module doc for the layout).
#[derive(Clone, Debug)]
pub struct PaddedBatch {
    pub b: usize,
    pub t: usize,
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
    /// Per given pair (rows past them are padding).
    pub prompt_len: Vec<usize>,
    pub answer_len: Vec<usize>,
}

impl PaddedBatch {
    /// `pairs` as the first rows of a [b, t] batch. Every prompt and answer must be non-empty and fit a row.
    pub fn new(pairs: &[(&[u32], &[u32])], b: usize, t: usize, pad: u32) -> Result<PaddedBatch> {
        if pairs.len() > b {
            bail!("{} pairs for a batch of {b} rows", pairs.len());
        }
        let (mut tokens, mut targets) = (vec![pad; b * t], vec![pad; b * t]);
        for (i, (p, a)) in pairs.iter().enumerate() {
            if p.is_empty() || a.is_empty() || p.len() + a.len() > t {
                bail!(
                    "row {i}: a pair of {} + {} tokens does not fit rows of {t} (both parts non-empty)",
                    p.len(),
                    a.len()
                );
            }
            let row = &mut tokens[i * t..];
            row[..p.len()].copy_from_slice(p);
            row[p.len()..p.len() + a.len()].copy_from_slice(a);
            let n = p.len() + a.len();
            targets[i * t..i * t + n - 1].copy_from_slice(&tokens[i * t + 1..i * t + n]);
        }
        let prompt_len = pairs.iter().map(|(p, _)| p.len()).collect();
        let answer_len = pairs.iter().map(|(_, a)| a.len()).collect();
        Ok(PaddedBatch { b, t, tokens, targets, prompt_len, answer_len })
    }

    /// One row per pair, as wide as the longest.
    pub fn fitted(pairs: &[(&[u32], &[u32])], pad: u32) -> Result<PaddedBatch> {
        if pairs.is_empty() {
            bail!("an empty batch");
        }
        let t = pairs.iter().map(|(p, a)| p.len() + a.len()).max().unwrap();
        PaddedBatch::new(pairs, pairs.len(), t, pad)
    }

    /// The row predicting answer token j of pair i (where its logprob and the value before it live).
    pub fn answer_row(&self, i: usize, j: usize) -> usize {
        i * self.t + self.prompt_len[i] + j - 1
    }

    /// The row of pair i's last answer token (where a scalar model reads its score).
    pub fn last_row(&self, i: usize) -> usize {
        i * self.t + self.prompt_len[i] + self.answer_len[i] - 1
    }

    /// Per-pair values at the answer rows of a flat [B*T] vector.
    pub fn gather(&self, flat: &[f64]) -> Vec<Vec<f64>> {
        (0..self.prompt_len.len())
            .map(|i| (0..self.answer_len[i]).map(|j| flat[self.answer_row(i, j)]).collect())
            .collect()
    }

    /// A flat [B*T] vector holding per-pair, per-answer-token values at their rows, zero elsewhere.
    pub fn scatter(&self, per_token: &[Vec<f64>]) -> Vec<f64> {
        let mut out = vec![0.0; self.b * self.t];
        for (i, v) in per_token.iter().enumerate() {
            for (j, &x) in v.iter().enumerate() {
                out[self.answer_row(i, j)] = x;
            }
        }
        out
    }

    /// 1 on every answer row, 0 elsewhere [B*T].
    pub fn answer_mask(&self) -> Vec<f64> {
        self.scatter(&self.answer_len.iter().map(|&k| vec![1.0; k]).collect::<Vec<_>>())
    }

    /// The answer-only language-model batch: weight 1/(answer tokens in the batch) on each answer row, 0 on
    /// prompt and padding rows.
    pub fn answer_lm_batch(self) -> LmBatch {
        let count: usize = self.answer_len.iter().sum();
        let mut weights = vec![0.0f32; self.b * self.t];
        for i in 0..self.prompt_len.len() {
            for j in 0..self.answer_len[i] {
                weights[self.answer_row(i, j)] = 1.0;
            }
        }
        weights.iter_mut().for_each(|w| *w /= count.max(1) as f32);
        LmBatch { inputs: self.tokens, targets: self.targets, weights }
    }
}

/// `pairs` (prompt, answer) as borrowed slices, the shape [`PaddedBatch::new`] takes.
pub fn slices<'a>(pairs: impl IntoIterator<Item = &'a Pair>) -> Vec<(&'a [u32], &'a [u32])> {
    pairs.into_iter().map(|(p, a)| (p.as_slice(), a.as_slice())).collect()
}

/// Indices of the `per_step` examples of `step` out of `n`: step k takes items k*per_step .. (k+1)*per_step
/// of an endless sequence of epochs, each a permutation drawn from `Rng::stream(seed, epoch)`. A pure
/// function of (seed, step), so a resumed run draws exactly what the unbroken run would have.
pub fn epoch_order(seed: u64, step: u64, per_step: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(per_step);
    let mut perm: (u64, Vec<usize>) = (u64::MAX, vec![]);
    for i in 0..per_step as u64 {
        let g = step * per_step as u64 + i;
        let epoch = g / n as u64;
        if perm.0 != epoch {
            let mut p: Vec<usize> = (0..n).collect();
            Rng::stream(seed, epoch).shuffle(&mut p);
            perm = (epoch, p);
        }
        out.push(perm.1[(g % n as u64) as usize]);
    }
    out
}
