//! Token + position embedding.
//!
//! Forward:  out[b,t,:] = wte[tokens[b,t],:] + wpe[pos0[b]+t,:]
//! Backward: dwte[tokens[b,t],:] += dout[b,t,:];  dwpe[pos0[b]+t,:] += dout[b,t,:]  (no dwpe: a model without
//!           a position table, whose forward is the row gather `Backend::copy_rows`)
//!
//! Shapes: tokens [B*T], wte [V(p),C], wpe [maxT,C], out/dout [B,T,C], pos0 [B] (the absolute position of
//! each row's first token: 0 in training, the cache length when sampling with a KV cache).
//! The backward walks the tokens in order, so repeated tokens accumulate in a fixed order (deterministic).

use super::Float;
use rayon::prelude::*;

pub fn forward<F: Float>(out: &mut [F], tokens: &[u32], wte: &[F], wpe: &[F], pos0: &[u32], t: usize, c: usize) {
    out.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
        let (b, ti) = (i / t, i % t);
        let tok = tokens[i] as usize;
        let pos = pos0[b] as usize + ti;
        let (e, p) = (&wte[tok * c..(tok + 1) * c], &wpe[pos * c..(pos + 1) * c]);
        for k in 0..c {
            row[k] = e[k] + p[k];
        }
    });
}

pub fn backward<F: Float>(
    dwte: &mut [F],
    mut dwpe: Option<&mut [F]>,
    dout: &[F],
    tokens: &[u32],
    pos0: &[u32],
    t: usize,
    c: usize,
) {
    for (i, d) in dout.chunks(c).enumerate() {
        let tok = tokens[i] as usize;
        let pos = pos0[i / t] as usize + i % t;
        for k in 0..c {
            dwte[tok * c + k] += d[k];
        }
        if let Some(dwpe) = dwpe.as_deref_mut() {
            for k in 0..c {
                dwpe[pos * c + k] += d[k];
            }
        }
    }
}
