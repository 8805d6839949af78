//! AdamW (Loshchilov & Hutter) with bias correction and decoupled weight decay, plus the global
//! gradient-norm reduction used for clipping.
//!
//! With g = grad * grad_scale (grad_scale = min(1, clip / ||grad||_2) over all parameters), at step t >= 1:
//!   m = b1 m + (1-b1) g;   v = b2 v + (1-b2) g^2;   mhat = m / (1-b1^t);   vhat = v / (1-b2^t)
//!   p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p)        (wd = 0 for biases, layernorm and other 1-D tensors)

use super::Float;
use rayon::prelude::*;

const CHUNK: usize = 16384;

#[derive(Clone, Copy, Debug)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step count.
    pub step: u64,
    pub grad_scale: f64,
}

pub fn step<F: Float>(param: &mut [F], grad: &[F], m: &mut [F], v: &mut [F], h: &AdamWParams) {
    let (b1, b2) = (F::of(h.beta1), F::of(h.beta2));
    let c1 = F::of(1.0 - h.beta1.powi(h.step as i32));
    let c2 = F::of(1.0 - h.beta2.powi(h.step as i32));
    let (lr, eps, wd, gs) = (F::of(h.lr), F::of(h.eps), F::of(h.weight_decay), F::of(h.grad_scale));
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            for i in 0..p.len() {
                let g = g[i] * gs;
                m[i] = b1 * m[i] + (F::one() - b1) * g;
                v[i] = b2 * v[i] + (F::one() - b2) * g * g;
                let update = (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                p[i] -= lr * (update + wd * p[i]);
            }
        });
}

/// Sum of squares in f64, reduced over fixed chunks in order (deterministic).
pub fn sum_squares<F: Float>(x: &[F]) -> f64 {
    let parts: Vec<f64> = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| v.f64() * v.f64()).sum()).collect();
    parts.iter().sum()
}

/// The learning rate at `step` (0-based): linear warmup to `max_lr` over `warmup` steps, then cosine decay
/// to `min_lr` at `total` steps.
pub fn lr_schedule(step: u64, max_lr: f64, min_lr: f64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return max_lr * (step + 1) as f64 / warmup as f64;
    }
    if step >= total {
        return min_lr;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    min_lr + 0.5 * (max_lr - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}
