//! Choosing one token from a row of logits: the reference of the device sampler (`Backend::sample`,
//! `kernels/sample.cu`), which makes the same choice for the same logits and uniform number.
//!
//! A row x [V] (f32; bf16 storage is read exactly as f32, the f64 CPU backend's rows rounded to f32),
//! temperature t (0 = greedy), top-k k (0 = off), top-p p (1 = off) and u, uniform in [0, 1) (drawn on the
//! host, one per row):
//!   z_i = x_i / t in f64 (t = 1 when greedy),  m = max_i z_i,  w_i = exp(z_i - m)
//!   S = sum_i w_i (in the blocked order below),  lse = m + ln S
//!   logprob = z_tok - lse, rounded to f32: under the temperature-scaled distribution, before any filtering
//!   (what PPO's ratio needs).
//! The token:
//! - greedy: the first maximum of z (ties to the lower id, as torch.argmax). u is not used.
//! - plain (no top-k, no top-p): the inverse CDF in id order, the first id at which the running sum of w
//!   reaches u * S. O(V): one pass for the sums, one for the draw.
//! - filtered: the ids in descending z (ties to the lower id); the first k of them (top-k); of those the
//!   shortest prefix whose probabilities exp(z - lse), summed in that order, reach p (top-p); then the
//!   inverse CDF over the kept ids in that order (u * S_kept, minus each w until it is <= 0; S_kept their w
//!   summed in that order). The kernel extracts the order one id at a time (a block argmax per kept id, two
//!   passes): O(kept * V) work, fine for top-k, slow for a top-p nucleus of thousands of ids.
//!
//! The blocked order, which the kernel follows term by term: the ids are cut into [`CHUNKS`] contiguous
//! chunks of L = ceil(V / CHUNKS) ids (chunk c holds ids cL .. min((c+1)L, V)); a chunk's sum s_c adds its w
//! in id order, and the chunk sums are added in chunk order: P_c = s_0 + ... + s_{c-1}, S = P_CHUNKS. The
//! plain draw, with target = u * S, takes the first chunk c with P_c + s_c >= target, then in it the running
//! sum P_c + w_i in id order, the first id where it reaches the target (the chunk's last id if rounding
//! leaves it short). In the kernel each thread owns one chunk and thread 0 adds the chunk sums in order, so
//! every sum is formed from the same f64 terms in the same order and both choose the same token. What can
//! still differ is `exp` and `ln` themselves: in the simulator both sides call the host's libm, on a GPU
//! CUDA's f64 `exp` (within 1 ulp) may differ from it in the last bit, which changes a choice only when the
//! target falls within ~1e-16 (relative) of a chunk or id boundary.

use super::Float;
use anyhow::{anyhow, Result};

/// Chunks of the blocked sums (the kernel's threads per row: `SAMPLE_BLOCK`, asserted equal at compile time).
pub const CHUNKS: usize = 256;

/// How a token is chosen from the logits (the sampler's part of `SampleConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (> 0); 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f64,
}

impl Sampling {
    /// Whether a draw uses its uniform number (not greedy).
    pub fn draws(&self) -> bool {
        self.temperature > 0.0
    }
}

/// The token chosen from the row `x` [V] with uniform `u`, and its temperature-scaled log-probability (see
/// the module docs). Non-finite logits (a diverged model) are an error naming the first, not a token.
pub fn pick<F: Float>(x: &[F], s: &Sampling, u: f64) -> Result<(u32, f32)> {
    if let Some((i, &x)) = x.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(non_finite(i, x.f64() as f32));
    }
    let t = if s.draws() { s.temperature } else { 1.0 };
    // Nothing is stored per id on the plain and greedy paths: z and w are recomputed where needed (the same
    // f64 values each time).
    let z = |i: usize| (x[i].f64() as f32) as f64 / t;
    let m = (0..x.len()).map(z).fold(f64::NEG_INFINITY, f64::max);
    let w = |i: usize| (z(i) - m).exp();
    let len = x.len().div_ceil(CHUNKS);
    let sums: Vec<f64> =
        (0..x.len()).step_by(len).map(|c| (c..(c + len).min(x.len())).fold(0.0, |a, i| a + w(i))).collect();
    let total = sums.iter().fold(0.0, |a, &b| a + b);
    let lse = m + total.ln();
    let tok = if !s.draws() {
        (0..x.len()).fold(0, |best, i| if z(i) > z(best) { i } else { best })
    } else if s.top_k == 0 && s.top_p >= 1.0 {
        draw_blocked(w, x.len(), len, &sums, u * total)
    } else {
        let z: Vec<f64> = (0..x.len()).map(z).collect();
        // Descending by logit, ties towards the lower id.
        let order = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
        let mut idx: Vec<usize> = (0..z.len()).collect();
        let mut keep = idx.len();
        if s.top_k > 0 && s.top_k < idx.len() {
            idx.select_nth_unstable_by(s.top_k - 1, order);
            keep = s.top_k;
        }
        idx[..keep].sort_unstable_by(order);
        if s.top_p < 1.0 {
            let mut cum = 0.0;
            for (n, &i) in idx[..keep].iter().enumerate() {
                cum += (z[i] - lse).exp();
                if cum >= s.top_p {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept = &idx[..keep];
        let mut left = u * kept.iter().fold(0.0, |a, &i| a + w(i));
        *kept
            .iter()
            .find(|&&i| {
                left -= w(i);
                left <= 0.0
            })
            .unwrap_or(&kept[keep - 1])
    };
    Ok((tok as u32, (z(tok) - lse) as f32))
}

/// The error for a non-finite logit `x` at token `i` (a diverged model).
pub fn non_finite(i: usize, x: f32) -> anyhow::Error {
    anyhow!("the model's logit for token {i} is {x}: its weights or activations are not finite")
}

/// The plain inverse-CDF draw in the blocked order (module docs): `w(i)` for the `v` ids, in chunks of `len`
/// with sums `sums`.
fn draw_blocked(w: impl Fn(usize) -> f64, v: usize, len: usize, sums: &[f64], target: f64) -> usize {
    let mut before = 0.0;
    for (c, &s) in sums.iter().enumerate() {
        if before + s >= target {
            let mut run = before;
            let ids = c * len..((c + 1) * len).min(v);
            let last = ids.end - 1;
            return ids
                .into_iter()
                .find(|&i| {
                    run += w(i);
                    run >= target
                })
                .unwrap_or(last);
        }
        before += s;
    }
    v - 1
}
