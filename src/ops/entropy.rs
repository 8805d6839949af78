//! Entropy of the temperature-scaled softmax of each logits row, and its gradient (PPO's entropy bonus
//! and its entropy statistic).
//!
//! For row i, with z = inv_temp * logits[i, 0..V] and p = softmax(z):
//!   H_i = -sum_j p_j log p_j = logsumexp(z) - sum_j p_j z_j
//!   dH_i/dlogits[i,j] = -inv_temp * p_j * (log p_j + H_i)
//! The caller differentiates L = sum_i coef[i] * H_i; with `want_grad`, dlogits[i,j] = coef[i] dH_i/dlogits[i,j]
//! for j < V and 0 for the pad columns V..Vp (overwritten).
//!
//! Shapes: logits, dlogits [N,Vp]; ent, coef [N].

use super::Float;
use rayon::prelude::*;

/// logsumexp(inv_temp * row), computed stably.
fn logsumexp<F: Float>(row: &[F], inv_temp: F) -> F {
    let mx = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x * inv_temp));
    mx + row.iter().map(|&x| (x * inv_temp - mx).exp()).sum::<F>().ln()
}

#[allow(clippy::too_many_arguments)]
pub fn forward_backward<F: Float>(
    ent: &mut [F],
    dlogits: &mut [F],
    logits: &[F],
    coef: &[F],
    v: usize,
    vp: usize,
    inv_temp: F,
    want_grad: bool,
) {
    dlogits.par_chunks_mut(vp).zip(logits.par_chunks(vp)).zip(ent.par_iter_mut()).enumerate().for_each(
        |(i, ((d, row), h))| {
            let lse = logsumexp(&row[..v], inv_temp);
            let mut acc = F::zero();
            for &x in &row[..v] {
                let z = x * inv_temp;
                acc += (z - lse).exp() * z;
            }
            *h = lse - acc;
            if want_grad {
                let c = coef[i] * inv_temp;
                for (dj, &x) in d[..v].iter_mut().zip(&row[..v]) {
                    let logp = x * inv_temp - lse;
                    *dj = -c * logp.exp() * (logp + *h);
                }
                d[v..].iter_mut().for_each(|x| *x = F::zero());
            }
        },
    );
}
