//! GELU, tanh approximation (GPT-2's "gelu_new").
//!
//! Forward:  y = 0.5 x (1 + tanh(u)),  u = s (x + 0.044715 x^3),  s = sqrt(2/pi)
//! Backward: dx = dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3*0.044715 x^2))
//! Computed through the identity 0.5 (1 + tanh u) = sigmoid(2u) =: g, one exp per element:
//!           y = x g,   dx = dy * (g + 2 x g (1 - g) s (1 + 3*0.044715 x^2))
//!
//! Shapes: any, elementwise. The backward overwrites dinp.

use super::Float;
use rayon::prelude::*;

const CHUNK: usize = 4096;
const K: f64 = 0.044715;

fn s<F: Float>() -> F {
    F::of((2.0 / std::f64::consts::PI).sqrt())
}

/// sigmoid(2u) = 0.5 (1 + tanh u) for u = s (x + K x^3).
#[inline]
fn gate<F: Float>(x: F) -> F {
    let u = s::<F>() * (x + F::of(K) * x * x * x);
    F::one() / (F::one() + (-(u + u)).fast_exp())
}

pub fn forward<F: Float>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (y, &x) in o.iter_mut().zip(x) {
            *y = x * gate(x);
        }
    });
}

pub fn backward<F: Float>(dinp: &mut [F], inp: &[F], dout: &[F]) {
    dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(dx, (x, dy))| {
        for i in 0..dx.len() {
            let x = x[i];
            let g = gate(x);
            let du = s::<F>() * (F::one() + F::of(3.0 * K) * x * x);
            dx[i] = dy[i] * (g + F::of(2.0) * x * g * (F::one() - g) * du);
        }
    });
}
