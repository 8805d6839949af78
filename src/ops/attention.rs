//! Causal multi-head self-attention on a packed qkv tensor.
//!
//! For row b, head h, query t at absolute position p = pos0[b] + t, keys j = 0..=p:
//!   s_j = (q_t . k_j) / sqrt(HS);   lse_t = log sum_j exp(s_j);   P_j = exp(s_j - lse_t);   out_t = sum_j P_j v_j
//! Backward (training form, pos0 = 0, keys = queries' own qkv), with D_t = dout_t . out_t:
//!   dv_j += sum_t P_tj dout_t;   dP_tj = dout_t . v_j;   dS_tj = P_tj (dP_tj - D_t);
//!   dq_t = sum_j dS_tj k_j / sqrt(HS);   dk_j += sum_t dS_tj q_t / sqrt(HS)
//! Only the log-sum-exp per query is saved (the T x T probabilities are recomputed in the backward), the
//! same contract as the fused (flash) CUDA kernel.
//!
//! Shapes: q_src [B,Tq,3C] (q in columns 0..C), kv [B,Tk,3C] (k in C..2C, v in 2C..3C), out [B,Tq,C],
//! lse [B,NH,Tq], pos0 [B]; head h uses columns h*HS..(h+1)*HS of each section. In training kv is q_src
//! itself; when sampling, kv is the KV cache and Tk its capacity.

use super::{Float, SharedMut};
use rayon::prelude::*;

fn dot<F: Float>(a: &[F], b: &[F]) -> F {
    a.iter().zip(b).fold(F::zero(), |s, (&x, &y)| s + x * y)
}

#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(out: &mut [F], lse: &mut [F], q_src: &[F], kv: &[F], pos0: &[u32], b: usize, tq: usize, tk: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = F::one() / F::of(hs as f64).sqrt();
    let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let mut s = vec![F::zero(); tk];
        for t in 0..tq {
            let p = pos0[bi] as usize + t;
            assert!(p < tk, "attention: position {p} beyond the key length {tk}");
            let q = &q_src[(bi * tq + t) * 3 * c + h * hs..][..hs];
            let mut mx = F::neg_infinity();
            for j in 0..=p {
                let k = &kv[(bi * tk + j) * 3 * c + c + h * hs..][..hs];
                s[j] = dot(q, k) * scale;
                mx = mx.max(s[j]);
            }
            let mut sum = F::zero();
            for sj in &mut s[..=p] {
                *sj = (*sj - mx).exp();
                sum += *sj;
            }
            // SAFETY: each (b, h, t) owns out[b,t,h*HS..(h+1)*HS] and lse[b,h,t]; no two tasks share them.
            let o = unsafe { std::slice::from_raw_parts_mut(out_p.ptr().add((bi * tq + t) * c + h * hs), hs) };
            o.iter_mut().for_each(|x| *x = F::zero());
            for j in 0..=p {
                let v = &kv[(bi * tk + j) * 3 * c + 2 * c + h * hs..][..hs];
                let w = s[j] / sum;
                for d in 0..hs {
                    o[d] += w * v[d];
                }
            }
            unsafe { *lse_p.ptr().add((bi * nh + h) * tq + t) = mx + sum.ln() };
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(dqkv: &mut [F], dout: &[F], qkv: &[F], out: &[F], lse: &[F], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = F::one() / F::of(hs as f64).sqrt();
    let dp = SharedMut(dqkv.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let row = |ti: usize, sec: usize| (bi * t + ti) * 3 * c + sec * c + h * hs;
        // SAFETY: task (b, h) owns the columns of head h in the three sections of rows b*T..(b+1)*T.
        let dq_k_v = |ti: usize, sec: usize| unsafe { std::slice::from_raw_parts_mut(dp.ptr().add(row(ti, sec)), hs) };
        for ti in 0..t {
            for sec in 0..3 {
                dq_k_v(ti, sec).iter_mut().for_each(|x| *x = F::zero());
            }
        }
        let mut pr = vec![F::zero(); t];
        for ti in 0..t {
            let q = &qkv[row(ti, 0)..][..hs];
            let dov = &dout[(bi * t + ti) * c + h * hs..][..hs];
            let o = &out[(bi * t + ti) * c + h * hs..][..hs];
            let dd = dot(dov, o);
            let l = lse[(bi * nh + h) * t + ti];
            let dq = dq_k_v(ti, 0);
            for j in 0..=ti {
                let k = &qkv[row(j, 1)..][..hs];
                let v = &qkv[row(j, 2)..][..hs];
                pr[j] = (dot(q, k) * scale - l).exp();
                let ds = pr[j] * (dot(dov, v) - dd) * scale;
                let dv = dq_k_v(j, 2);
                for d in 0..hs {
                    dv[d] += pr[j] * dov[d];
                }
                for d in 0..hs {
                    dq[d] += ds * k[d];
                }
                let dk = dq_k_v(j, 1);
                for d in 0..hs {
                    dk[d] += ds * q[d];
                }
            }
        }
    });
}
