//! Residual add and gradient accumulation.
//!
//! Forward:  out = a + b.   Backward: the gradient of `out` flows unchanged to both `a` and `b`; the engine
//! realises this by accumulating (`dst += src`) into the residual stream's gradient.

use super::Float;
use rayon::prelude::*;

const CHUNK: usize = 8192;

pub fn add<F: Float>(out: &mut [F], a: &[F], b: &[F]) {
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        for i in 0..o.len() {
            o[i] = a[i] + b[i];
        }
    });
}

pub fn accumulate<F: Float>(dst: &mut [F], src: &[F]) {
    dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| {
        for i in 0..d.len() {
            d[i] += s[i];
        }
    });
}

pub fn scale<F: Float>(buf: &mut [F], s: F) {
    buf.par_chunks_mut(CHUNK).for_each(|d| d.iter_mut().for_each(|x| *x *= s));
}
