//! Rotary position embedding (Su et al. 2021, "RoFormer") in Hugging Face's rotate-half layout (Llama, Qwen2,
//! Mistral): head dim d, the pairs are (x_i, x_{i+d/2}) for i < d/2, not adjacent dims.
//!
//! Frequencies (host, f64, once per model): inv_freq_i = theta^(-2i/d), optionally with Llama 3 scaling
//! (`rope_scaling.rope_type = "llama3"`: factor, low_freq_factor, high_freq_factor and the original context
//! L = original_max_position_embeddings): wavelen = 2 pi / inv_freq;  wavelen < L/high: kept;
//! wavelen > L/low: inv_freq / factor;  else, with s = (L/wavelen - low)/(high - low),
//! inv_freq = (1 - s) inv_freq / factor + s inv_freq.
//!
//! Forward (in place, on the q heads and the k heads of a packed qkv row, at absolute position
//! p = pos0[b] + t, the convention of `attention::forward`), with a = p * inv_freq_i:
//!   x_i' = x_i cos a - x_{i+d/2} sin a;    x_{i+d/2}' = x_{i+d/2} cos a + x_i sin a
//! (Hugging Face: q' = q cos + rotate_half(q) sin, rotate_half([x1, x2]) = [-x2, x1].)
//! Backward: the rotation is orthogonal, so its transpose (the rotation by -a) maps dq', dk' to dq, dk in place;
//! the v heads pass through untouched in both directions.
//!
//! Precision: the angle is the product p * inv_freq in the element type (f32 in the engine, as Hugging Face's
//! f32 `inv_freq @ position_ids`; the kernels take the table rounded to f32 and multiply in f32), then its sin
//! and cos (the kernels reduce the angle to [-pi, pi] first: kernels/rope.cu). At p ~ 4000 the f32 angle is off
//! by up to ~4e-4 rad (half an ulp of the product plus the table's rounding times p), which is the scale of
//! the engine's difference from an f64 evaluation.
//!
//! Shapes: qkv/dqkv [B, T, (NH + 2 NKV) HS] (q heads, then NKV k heads, then NKV v heads), pos0 [B],
//! inv_freq [HS/2]; HS even.

use super::{Float, SharedMut};
use rayon::prelude::*;

/// Llama 3 frequency scaling (`rope_scaling` with `rope_type = "llama3"` in config.json).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The rotation's frequencies for one head size, computed once.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// inv_freq_i for i < HS/2.
    pub inv_freq: Vec<f64>,
}

impl Rope {
    pub fn new(theta: f64, head_dim: usize, scaling: Option<Llama3Scaling>) -> Rope {
        assert!(head_dim.is_multiple_of(2) && head_dim > 0, "rope: head dim {head_dim} must be even");
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let f = theta.powf(-((2 * i) as f64) / head_dim as f64);
                match scaling {
                    None => f,
                    Some(s) => {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let l = s.original_max_position_embeddings;
                        if wavelen < l / s.high_freq_factor {
                            f
                        } else if wavelen > l / s.low_freq_factor {
                            f / s.factor
                        } else {
                            let t = (l / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - t) * f / s.factor + t * f
                        }
                    }
                }
            })
            .collect();
        Rope { inv_freq }
    }

    /// The head size the table is for.
    pub fn head_dim(&self) -> usize {
        2 * self.inv_freq.len()
    }
}

/// Rotates the q and k heads of every row of `qkv` by `sign` * angle (+1 forward, -1 backward).
#[allow(clippy::too_many_arguments)]
fn rotate<F: Float>(qkv: &mut [F], rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize, sign: F) {
    let (hs, half) = (rope.head_dim(), rope.inv_freq.len());
    let width = (nh + 2 * nkv) * hs;
    assert!(qkv.len() >= b * t * width && pos0.len() >= b, "rope: qkv or pos0 shorter than the shapes");
    let inv: Vec<F> = rope.inv_freq.iter().map(|&f| F::of(f)).collect();
    let p = SharedMut(qkv.as_mut_ptr());
    (0..b * t).into_par_iter().for_each(|row| {
        let pos = F::of((pos0[row / t] as usize + row % t) as f64);
        // SAFETY: task `row` touches only row `row` of qkv (inside the length asserted above).
        let x = unsafe { std::slice::from_raw_parts_mut(p.ptr().add(row * width), (nh + nkv) * hs) };
        for i in 0..half {
            let (sin, cos) = (pos * inv[i]).sin_cos();
            let sin = sign * sin;
            for head in x.chunks_mut(hs) {
                let (x1, x2) = (head[i], head[i + half]);
                head[i] = x1 * cos - x2 * sin;
                head[i + half] = x2 * cos + x1 * sin;
            }
        }
    });
}

/// qkv [B,T,(NH+2NKV)HS]: q and k heads rotated in place to their positions pos0[b] + t.
pub fn forward<F: Float>(qkv: &mut [F], rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize) {
    rotate(qkv, rope, pos0, b, t, nh, nkv, F::one())
}

/// dqkv [B,T,(NH+2NKV)HS]: the gradients of the rotated q and k heads taken back through the rotation in place.
pub fn backward<F: Float>(dqkv: &mut [F], rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize) {
    rotate(dqkv, rope, pos0, b, t, nh, nkv, -F::one())
}
