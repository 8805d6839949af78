//! SwiGLU, the gated MLP activation of Llama, Qwen2 and Mistral (Shazeer 2020, "GLU Variants Improve
//! Transformer"), on the packed output of one fused [gate | up] projection.
//!
//! Forward:  out = silu(gate) * up,   silu(z) = z s,  s = sigmoid(z)
//! Backward: d gate = dout * up * s (1 + z (1 - s));   d up = dout * silu(gate)        (dinp is overwritten)
//!
//! Shapes: inp/dinp [N, 2F] (row n: gate in columns 0..F, up in F..2F), out/dout [N, F].

use super::Float;
use rayon::prelude::*;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;

#[inline]
fn sigmoid<F: Float>(z: F) -> F {
    F::one() / (F::one() + (-z).fast_exp())
}

pub fn forward<F: Float>(out: &mut [F], inp: &[F], f: usize) {
    out.par_chunks_mut(ROWS_PER_TASK * f).zip(inp.par_chunks(ROWS_PER_TASK * 2 * f)).for_each(|(o, x)| {
        for (o, x) in o.chunks_mut(f).zip(x.chunks(2 * f)) {
            let (gate, up) = x.split_at(f);
            for k in 0..f {
                o[k] = gate[k] * sigmoid(gate[k]) * up[k];
            }
        }
    });
}

pub fn backward<F: Float>(dinp: &mut [F], dout: &[F], inp: &[F], f: usize) {
    dinp.par_chunks_mut(ROWS_PER_TASK * 2 * f)
        .zip(dout.par_chunks(ROWS_PER_TASK * f).zip(inp.par_chunks(ROWS_PER_TASK * 2 * f)))
        .for_each(|(dx, (dy, x))| {
            for (dx, (dy, x)) in dx.chunks_mut(2 * f).zip(dy.chunks(f).zip(x.chunks(2 * f))) {
                let (gate, up) = x.split_at(f);
                let (dgate, dup) = dx.split_at_mut(f);
                for k in 0..f {
                    let (z, s) = (gate[k], sigmoid(gate[k]));
                    dgate[k] = dy[k] * up[k] * s * (F::one() + z * (F::one() - s));
                    dup[k] = dy[k] * z * s;
                }
            }
        });
}
