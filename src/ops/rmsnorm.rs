//! RMS normalisation over the last dimension (Llama, Qwen2, Mistral: Zhang & Sennrich 2019), no mean and no
//! bias; `eps` is the model's `rms_norm_eps` (1e-5 Llama, 1e-6 Qwen2).
//!
//! Forward:  rstd = 1/sqrt(sum(x^2)/C + eps);  xhat = x*rstd;  out = xhat*w                       (rstd kept)
//! Backward: with g = dout*w (d xhat_k / d x_j = rstd (delta_kj - xhat_k xhat_j / C)):
//!           dx += rstd * (g - xhat*mean(g*xhat));   dw += sum_rows dout*xhat
//!
//! Shapes: inp/out/dout/dinp [N,C], w/dw [C], rstd [N].

use super::{par_chunked_sum, Float};
use rayon::prelude::*;

const ROWS_PER_TASK: usize = 64;

pub fn forward<F: Float>(out: &mut [F], rstd: &mut [F], inp: &[F], w: &[F], c: usize, eps: f64) {
    let cf = F::of(c as f64);
    out.par_chunks_mut(c).zip(rstd.par_iter_mut()).zip(inp.par_chunks(c)).for_each(|((o, r), x)| {
        let ms = x.iter().map(|&v| v * v).sum::<F>() / cf;
        let rs = F::one() / (ms + F::of(eps)).sqrt();
        for k in 0..c {
            o[k] = x[k] * rs * w[k];
        }
        *r = rs;
    });
}

pub fn backward<F: Float>(dinp: &mut [F], dw: &mut [F], dout: &[F], inp: &[F], w: &[F], rstd: &[F], c: usize) {
    let cf = F::of(c as f64);
    dinp.par_chunks_mut(c).enumerate().for_each(|(i, dx)| {
        let (x, d, rs) = (&inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c], rstd[i]);
        let mgx = (0..c).map(|k| d[k] * w[k] * x[k] * rs).sum::<F>() / cf;
        for k in 0..c {
            dx[k] += rs * (d[k] * w[k] - x[k] * rs * mgx);
        }
    });
    // dw: one [C] partial per task, reduced in task order.
    if let Some(acc) = par_chunked_sum(rstd.len(), ROWS_PER_TASK, |rows| {
        let mut p = vec![F::zero(); c];
        for i in rows {
            let (x, d) = (&inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c]);
            for k in 0..c {
                p[k] += d[k] * x[k] * rstd[i];
            }
        }
        p
    }) {
        dw.iter_mut().zip(acc).for_each(|(a, b)| *a += b);
    }
}
