//! Linear layer, weights stored [in, out] (Hugging Face GPT-2's Conv1D layout).
//!
//! Forward:  out[N,OC] = inp[N,C] @ w[C,OC] + bias[OC]
//! Backward: dinp[N,C] = dout @ w^T;   dw[C,OC] += inp^T @ dout;   dbias[OC] += sum_rows dout
//!
//! The backend composes this from `matmul` and the two bias ops below, so a GPU backend can fuse the bias
//! into the GEMM epilogue without changing the model code.

use super::{par_chunked_sum, Float};
use rayon::prelude::*;

/// out[N,OC] += bias[OC] on every row.
pub fn bias_add<F: Float>(out: &mut [F], bias: &[F]) {
    let oc = bias.len();
    out.par_chunks_mut(oc).for_each(|row| {
        for (o, &b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    });
}

/// dbias[OC] += column sums of dout[N,OC].
pub fn bias_backward<F: Float>(dbias: &mut [F], dout: &[F]) {
    let oc = dbias.len();
    let n = dout.len() / oc;
    if let Some(acc) = par_chunked_sum(n, 64, |rows| {
        let mut p = vec![F::zero(); oc];
        for i in rows {
            for (a, &d) in p.iter_mut().zip(&dout[i * oc..(i + 1) * oc]) {
                *a += d;
            }
        }
        p
    }) {
        for (d, a) in dbias.iter_mut().zip(acc) {
            *d += a;
        }
    }
}
