//! Layer normalisation over the last dimension (eps = 1e-5, biased variance, as GPT-2).
//!
//! Forward:  mean = sum(x)/C;  rstd = 1/sqrt(sum((x-mean)^2)/C + eps);  xhat = (x-mean)*rstd;
//!           out = xhat*w + b                                                     (mean, rstd kept)
//! Backward: with g = dout*w:
//!           dx += rstd * (g - mean(g) - xhat*mean(g*xhat));   dw += sum_rows dout*xhat;   db += sum_rows dout
//!
//! Shapes: inp/out/dout/dinp [N,C], w/b/dw/db [C], mean/rstd [N].

use super::{par_chunked_sum, Float};
use rayon::prelude::*;

pub const EPS: f64 = 1e-5;
const ROWS_PER_TASK: usize = 64;

pub fn forward<F: Float>(out: &mut [F], mean: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], b: &[F], c: usize) {
    let cf = F::of(c as f64);
    out.par_chunks_mut(c).zip(mean.par_iter_mut().zip(rstd.par_iter_mut())).zip(inp.par_chunks(c)).for_each(
        |((o, (m, r)), x)| {
            let mu = x.iter().copied().sum::<F>() / cf;
            let var = x.iter().map(|&v| (v - mu) * (v - mu)).sum::<F>() / cf;
            let rs = F::one() / (var + F::of(EPS)).sqrt();
            for k in 0..c {
                o[k] = (x[k] - mu) * rs * w[k] + b[k];
            }
            *m = mu;
            *r = rs;
        },
    );
}

#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    c: usize,
) {
    let cf = F::of(c as f64);
    dinp.par_chunks_mut(c).enumerate().for_each(|(i, dx)| {
        let (x, d) = (&inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c]);
        let (mu, rs) = (mean[i], rstd[i]);
        let (mut mg, mut mgx) = (F::zero(), F::zero());
        for k in 0..c {
            let g = d[k] * w[k];
            mg += g;
            mgx += g * (x[k] - mu) * rs;
        }
        mg /= cf;
        mgx /= cf;
        for k in 0..c {
            let xhat = (x[k] - mu) * rs;
            dx[k] += rs * (d[k] * w[k] - mg - xhat * mgx);
        }
    });
    let n = mean.len();
    // dw and db stacked as one [2C] partial per task, reduced in task order.
    if let Some(acc) = par_chunked_sum(n, ROWS_PER_TASK, |rows| {
        let mut p = vec![F::zero(); 2 * c];
        for i in rows {
            let (x, d) = (&inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c]);
            for k in 0..c {
                p[k] += d[k] * (x[k] - mean[i]) * rstd[i];
                p[c + k] += d[k];
            }
        }
        p
    }) {
        for k in 0..c {
            dw[k] += acc[k];
            db[k] += acc[c + k];
        }
    }
}
