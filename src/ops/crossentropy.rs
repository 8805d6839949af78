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

use super::Float;
use rayon::prelude::*;

/// The log-sum-exp of `inv_temp * row`, computed stably.
pub fn logsumexp<F: Float>(row: &[F], inv_temp: F) -> F {
    let mx = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x * inv_temp));
    mx + row.iter().map(|&x| (x * inv_temp - mx).exp()).sum::<F>().ln()
}

#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float>(losses: &mut [F], logits: &mut [F], targets: &[u32], weights: &[F], v: usize, vp: usize, inv_temp: F, want_grad: bool) {
    logits.par_chunks_mut(vp).zip(losses.par_iter_mut()).enumerate().for_each(|(i, (row, loss))| {
        let tgt = targets[i] as usize;
        assert!(tgt < v, "cross-entropy: target {tgt} at row {i} is outside the vocabulary ({v})");
        let lse = logsumexp(&row[..v], inv_temp);
        *loss = lse - row[tgt] * inv_temp;
        if want_grad {
            let w = weights[i] * inv_temp;
            for (j, x) in row[..v].iter_mut().enumerate() {
                let p = (*x * inv_temp - lse).exp();
                *x = w * (p - if j == tgt { F::one() } else { F::zero() });
            }
            row[v..].iter_mut().for_each(|x| *x = F::zero());
        }
    });
}
