//! Fused softmax + cross-entropy with per-token weights; the probabilities are never stored.
//!
//! For row i, with z = inv_temp * logits[i, 0..V] (temperature-scaled logits):
//!   losses[i] = logsumexp(z) - z[target_i]            (= -log p(target_i): the token's negative log-prob)
//! The scalar loss the caller differentiates is L = sum_i weights[i] * losses[i] (weights = mask / count for a
//! masked mean; PPO passes its own per-token coefficients). With `want_grad` the logits are overwritten by
//!   dL/dlogits[i,j] = weights[i] * inv_temp * (softmax(z)_j - [j == target_i])   for j < V,   0 for V <= j < Vp.
//! Rows with weight 0 still get their loss (a log-prob) and a zero gradient.
//!
//! Shapes: logits [N,Vp] (the pad columns V..Vp are ignored), targets/weights/losses [N].

use super::float::{lanes_max, lanes_sum};
use super::Float;
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float>(
    losses: &mut [F],
    logits: &mut [F],
    targets: &[u32],
    weights: &[F],
    v: usize,
    vp: usize,
    inv_temp: F,
    want_grad: bool,
) {
    assert!(inv_temp > F::zero(), "cross-entropy: the inverse temperature must be positive");
    logits.par_chunks_mut(vp).zip(losses.par_iter_mut()).enumerate().for_each(|(i, (row, loss))| {
        let tgt = targets[i] as usize;
        assert!(tgt < v, "cross-entropy: target {tgt} at row {i} is outside the vocabulary ({v})");
        let z_tgt = row[tgt] * inv_temp;
        // max(inv_temp * x) = inv_temp * max(x) for inv_temp > 0
        let mx = lanes_max(&row[..v]) * inv_temp;
        if want_grad {
            // One exp per logit: store e_j = exp(z_j - max) in place, then scale to the gradient.
            row[..v].iter_mut().for_each(|x| *x = (*x * inv_temp - mx).fast_exp());
            let sum = lanes_sum(&row[..v]);
            *loss = mx + sum.ln() - z_tgt;
            let scale = weights[i] * inv_temp / sum;
            row[..v].iter_mut().for_each(|x| *x *= scale);
            row[tgt] -= weights[i] * inv_temp;
            row[v..].iter_mut().for_each(|x| *x = F::zero());
        } else {
            let mut sum = F::zero();
            for chunk in row[..v].chunks(256) {
                let mut e = [F::zero(); 256];
                for (ei, &x) in e.iter_mut().zip(chunk) {
                    *ei = (x * inv_temp - mx).fast_exp();
                }
                sum += lanes_sum(&e[..chunk.len()]);
            }
            *loss = mx + sum.ln() - z_tgt;
        }
    });
}
