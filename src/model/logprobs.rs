//! Log-probabilities of answers under a model: one forward pass over a right-padded [prompt + answer]
//! batch and the fused cross-entropy with zero weights (no gradient), read back at each answer token's row
//! ([`PaddedBatch`]'s layout). Used wherever answers are scored by likelihood: PPO's reference and policy
//! log-probs, the evaluation's KL and perplexities, the gold judge's fluency.

use crate::backend::Backend;
use crate::data::batch::PaddedBatch;
use crate::model::{Acts, Decoder};
use crate::ops::Float;
use anyhow::Result;

/// Per-token log-probabilities of every answer under `model` (temperature-scaled by `inv_temp`), by one
/// forward pass and the fused cross-entropy (no gradient). Leaves the forward's activations in `acts`.
pub fn answer_logprobs<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    acts: &mut Acts<B>,
    sb: &PaddedBatch,
    inv_temp: f64,
) -> Result<Vec<Vec<f64>>> {
    model.forward(be, acts, &sb.tokens, None, None)?;
    model.lm_loss(be, acts, &sb.targets, &vec![0.0; sb.b * sb.t], inv_temp, None)?;
    let losses: Vec<f64> = be.download(&acts.losses).iter().map(|x| -x.f64()).collect();
    Ok(sb.gather(&losses))
}

/// Per-token log-probabilities of every (context, answer) pair under `model` (temperature 1), `batch`
/// pairs per forward pass, each batch as wide as its longest pair (right-padded with `pad`).
pub fn pairs_logprobs<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    pairs: &[(Vec<u32>, Vec<u32>)],
    pad: u32,
    batch: usize,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch.max(1)) {
        let rows: Vec<(&[u32], &[u32])> = chunk.iter().map(|(c, a)| (c.as_slice(), a.as_slice())).collect();
        let sb = PaddedBatch::fitted(&rows, pad)?;
        let mut acts = Acts::new(be, &model.cfg, sb.b, sb.t)?;
        out.extend(answer_logprobs(be, model, &mut acts, &sb, 1.0)?);
    }
    Ok(out)
}
