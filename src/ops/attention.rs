//! Causal multi-head self-attention on a packed qkv tensor, with grouped-query attention (GQA, Ainslie et al.
//! 2023): NH query heads share NKV key/value heads, query head h reading kv head h / (NH/NKV); NKV = NH is
//! multi-head attention (GPT-2's [q | k | v] layout), NKV = 1 multi-query attention.
//!
//! For row b, head h (kv head g = h / (NH/NKV)), query t at absolute position p = pos0[b] + t, keys j = 0..=p
//! (k_j, v_j of kv head g):
//!   s_j = (q_t . k_j) / sqrt(HS);   lse_t = log sum_j exp(s_j);   P_j = exp(s_j - lse_t);   out_t = sum_j P_j v_j
//! Backward (training form, pos0 = 0, keys = queries' own qkv), with D_t = dout_t . out_t:
//!   dv_j += sum_t P_tj dout_t;   dP_tj = dout_t . v_j;   dS_tj = P_tj (dP_tj - D_t);
//!   dq_t = sum_j dS_tj k_j / sqrt(HS);   dk_j += sum_t dS_tj q_t / sqrt(HS)
//! where dk, dv of a kv head sum over the NH/NKV query heads of its group (in head order: deterministic); the
//! backward overwrites dqkv.
//! Only the log-sum-exp per query is saved (the T x T probabilities are recomputed in the backward), the
//! same contract as the fused (flash) CUDA kernel.
//!
//! Shapes: a qkv row has W = (NH + 2 NKV) HS columns: q heads in 0..C (C = NH HS), k heads in C..C + NKV HS,
//! v heads in C + NKV HS..W (W = 3C when NKV = NH). q_src [B,Tq,W], kv [B,Tk,W], out [B,Tq,C],
//! lse [B,NH,Tq], pos0 [B]; head h uses columns h*HS..(h+1)*HS of its section. In training kv is q_src
//! itself; when sampling, kv is the KV cache and Tk its capacity.

use super::{Float, SharedMut};
use rayon::prelude::*;

/// out[m,n] (+)= alpha * sum_k a[m,k] b[k,n] on strided views (row stride, column stride), single-threaded:
/// the callers already run one task per (batch row, head).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    out: *mut F,
    out_rs: usize,
    accumulate: bool,
    a: *const F,
    a_rs: usize,
    a_cs: usize,
    b: *const F,
    b_rs: usize,
    b_cs: usize,
    alpha: F,
) {
    gemm::gemm(
        m,
        n,
        k,
        out,
        1,
        out_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        F::one(),
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(
    out: &mut [F],
    lse: &mut [F],
    q_src: &[F],
    kv: &[F],
    pos0: &[u32],
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) {
    let (hs, group, w) = shapes(c, nh, nkv);
    let scale = F::one() / F::of(hs as f64).sqrt();
    assert!(out.len() >= b * tq * c && lse.len() >= b * nh * tq && q_src.len() >= b * tq * w && kv.len() >= b * tk * w);
    for (bi, &p0) in pos0.iter().enumerate().take(b) {
        assert!(
            p0 as usize + tq <= tk,
            "attention: row {bi} reaches position {} beyond the key length {tk}",
            p0 as usize + tq
        );
    }
    let (out_p, lse_p) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..b * nh).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / nh, bh % nh);
        let p0 = pos0[bi] as usize;
        let tkeys = p0 + tq; // keys beyond the last query's position are never attended
        let g = h / group;
        let q = q_src[(bi * tq) * w + h * hs..].as_ptr();
        let k = kv[(bi * tk) * w + c + g * hs..].as_ptr();
        let v = kv[(bi * tk) * w + c + (nkv + g) * hs..].as_ptr();
        // S [tq, tkeys] = scale * Q K^T
        let mut s = vec![F::zero(); tq * tkeys];
        // SAFETY: all views stay inside the buffers asserted above; each task writes only its own
        // out[b, :, h*HS..(h+1)*HS] and lse[b, h, :].
        unsafe { gemm_strided(tq, tkeys, hs, s.as_mut_ptr(), tkeys, false, q, w, 1, k, 1, w, scale) };
        for t in 0..tq {
            let row = &mut s[t * tkeys..(t + 1) * tkeys];
            let last = p0 + t; // causal: keys 0..=last
            let mx = row[..=last].iter().fold(F::neg_infinity(), |m, &x| m.max(x));
            let mut sum = F::zero();
            for x in &mut row[..=last] {
                *x = (*x - mx).fast_exp();
                sum += *x;
            }
            let inv = F::one() / sum;
            row[..=last].iter_mut().for_each(|x| *x *= inv);
            row[last + 1..].iter_mut().for_each(|x| *x = F::zero());
            unsafe { *lse_p.ptr().add((bi * nh + h) * tq + t) = mx + sum.ln() };
        }
        // out [tq, HS] = P V
        unsafe {
            gemm_strided(
                tq,
                hs,
                tkeys,
                out_p.ptr().add(bi * tq * c + h * hs),
                c,
                false,
                s.as_ptr(),
                tkeys,
                1,
                v,
                w,
                1,
                F::one(),
            )
        };
    });
}

#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    dqkv: &mut [F],
    dout: &[F],
    qkv: &[F],
    out: &[F],
    lse: &[F],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) {
    let (hs, group, w) = shapes(c, nh, nkv);
    let scale = F::one() / F::of(hs as f64).sqrt();
    assert!(
        dqkv.len() >= b * t * w
            && dout.len() >= b * t * c
            && qkv.len() >= b * t * w
            && out.len() >= b * t * c
            && lse.len() >= b * nh * t
    );
    let dp = SharedMut(dqkv.as_mut_ptr());
    // One task per (row, kv head): the query heads of its group in order, dk and dv summed over them.
    (0..b * nkv).into_par_iter().for_each(|bg| {
        let (bi, g) = (bg / nkv, bg % nkv);
        let row0 = bi * t * w;
        let (k, v) = (qkv[row0 + c + g * hs..].as_ptr(), qkv[row0 + c + (nkv + g) * hs..].as_ptr());
        // SAFETY: views stay inside the asserted buffers; task (b, g) writes only kv head g's columns of the k and
        // v sections and its query heads' columns of the q section, in rows b*T..(b+1)*T of dqkv.
        let (dk, dv) = unsafe { (dp.ptr().add(row0 + c + g * hs), dp.ptr().add(row0 + c + (nkv + g) * hs)) };
        let (mut p, mut ds) = (vec![F::zero(); t * t], vec![F::zero(); t * t]);
        for h in g * group..(g + 1) * group {
            let acc = h > g * group;
            let q = qkv[row0 + h * hs..].as_ptr();
            let dq = unsafe { dp.ptr().add(row0 + h * hs) };
            let dov = dout[bi * t * c + h * hs..].as_ptr();
            // P [t, t] recomputed from the saved log-sum-exp: P = exp(scale Q K^T - lse), zero above the diagonal.
            unsafe { gemm_strided(t, t, hs, p.as_mut_ptr(), t, false, q, w, 1, k, 1, w, scale) };
            for ti in 0..t {
                let l = lse[(bi * nh + h) * t + ti];
                let row = &mut p[ti * t..(ti + 1) * t];
                row[..=ti].iter_mut().for_each(|x| *x = (*x - l).fast_exp());
                row[ti + 1..].iter_mut().for_each(|x| *x = F::zero());
            }
            // dV (+)= P^T dO
            unsafe { gemm_strided(t, hs, t, dv, w, acc, p.as_ptr(), 1, t, dov, c, 1, F::one()) };
            // dP = dO V^T, then dS = P * (dP - D) with D_t = dO_t . O_t
            unsafe { gemm_strided(t, t, hs, ds.as_mut_ptr(), t, false, dov, c, 1, v, 1, w, F::one()) };
            for ti in 0..t {
                let o = &out[bi * t * c + ti * c + h * hs..][..hs];
                let d = &dout[bi * t * c + ti * c + h * hs..][..hs];
                let dd = o.iter().zip(d).fold(F::zero(), |s, (&x, &y)| s + x * y);
                for j in 0..t {
                    ds[ti * t + j] = p[ti * t + j] * (ds[ti * t + j] - dd);
                }
            }
            // dQ = scale dS K;  dK (+)= scale dS^T Q
            unsafe {
                gemm_strided(t, hs, t, dq, w, false, ds.as_ptr(), t, 1, k, w, 1, scale);
                gemm_strided(t, hs, t, dk, w, acc, ds.as_ptr(), 1, t, q, w, 1, scale);
            }
        }
    });
}

/// (HS, query heads per kv head, qkv row width) of C = NH * HS channels and NKV kv heads.
fn shapes(c: usize, nh: usize, nkv: usize) -> (usize, usize, usize) {
    assert!(
        nh > 0 && c.is_multiple_of(nh) && nkv > 0 && nh.is_multiple_of(nkv),
        "attention: C ({c}) must be a multiple of NH ({nh}), NH of NKV ({nkv})"
    );
    let hs = c / nh;
    (hs, nh / nkv, c + 2 * nkv * hs)
}
