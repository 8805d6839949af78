//! The unfused attention path (kernels/attention_unfused.cu: permute, causal softmax, unpermute) in the CPU
//! simulator through the launch layer, with the two GEMMs the GPU benchmark does in cuBLAS done here on the
//! host in f32: S = Q K^T per (b, h), then Y = P V. The assembled output is compared with the CPU reference
//! `rlhf::ops::attention::forward` (f64, pos0 = 0, Tq = Tk = T) on the same inputs (for bf16: bf16-rounded).
//!
//! Error measure: max |got - want| / max |want| over the whole output.
//! - f32: 1e-5. Everything is f32 (the two host GEMMs over <= 70 terms, exp and the row sums in the kernel);
//!   each step adds a few ulps (~1e-7 relative), far below the bound.
//! - bf16: 2e-2. The pipeline stores every intermediate in bf16, as the benchmarked cuBLAS route does: S, P
//!   and Y are each rounded to bf16 (round to nearest even, 8 significant bits: at most half an ulp, 2^-8 =
//!   3.9e-3 relative, ~2^-10 on average). The rounding of S matters most: a logit scale*s moves by up to
//!   2^-8 |scale*s| (~1e-2 at the largest |scale*s| ~ 4 of these inputs), which changes the probabilities by
//!   about as much relatively; the errors are independent across keys and P sums to one, so the output (a
//!   P-weighted mean of values of size ~1) moves by a fraction of that, plus one more 2^-8 rounding of Y.
//!
//! Outputs are NaN-poisoned before each kernel runs so an element a kernel forgets to write fails the test.

mod common;

use common::{randn, DBuf};
use half::bf16;
use rlhf::kernels::launch::{self as kl, DType};
use rlhf::kernels::sim::{self, SimLauncher};
use rlhf::kernels::Launcher;
use rlhf::ops;
use rlhf::util::rng::Rng;

const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 2e-2;
const DTYPES: [DType; 2] = [DType::F32, DType::BF16];
/// (B, T, NH, HS): ragged T (not a multiple of 32), several lane passes per row (T = 70), T = 1.
const SHAPES: [(usize, usize, usize, usize); 3] = [(2, 37, 3, 16), (1, 70, 2, 64), (3, 1, 2, 8)];

fn tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => TOL_F32,
        DType::BF16 => TOL_BF16,
    }
}

/// max |got - want| / max |want| (infinite if `got` has a non-finite element).
fn max_rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    if got.iter().any(|g| !g.is_finite()) {
        return f64::INFINITY;
    }
    let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    err / scale.max(1e-300)
}

/// c[m][n] = sum_k a[m][k] b[n][k] (b transposed: rows of b are the keys), f32 accumulation, for each of `batch`
/// independent matrices stored back to back.
fn matmul_nt_f32(a: &[f64], b: &[f64], batch: usize, m: usize, n: usize, kd: usize) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for z in 0..batch {
        for i in 0..m {
            let ar = &a[(z * m + i) * kd..][..kd];
            for j in 0..n {
                let br = &b[(z * n + j) * kd..][..kd];
                c[(z * m + i) * n + j] = ar.iter().zip(br).fold(0.0f32, |s, (&x, &y)| s + x as f32 * y as f32) as f64;
            }
        }
    }
    c
}

/// c[m][n] = sum_k a[m][k] b[k][n], f32 accumulation, for each of `batch` matrices.
fn matmul_nn_f32(a: &[f64], b: &[f64], batch: usize, m: usize, n: usize, kd: usize) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for z in 0..batch {
        for i in 0..m {
            let mut acc = vec![0.0f32; n];
            for kk in 0..kd {
                let x = a[(z * m + i) * kd + kk] as f32;
                for (o, &y) in acc.iter_mut().zip(&b[(z * kd + kk) * n..][..n]) {
                    *o += x * y as f32;
                }
            }
            for (o, &v) in c[(z * m + i) * n..][..n].iter_mut().zip(&acc) {
                *o = v as f64;
            }
        }
    }
    c
}

struct Unfused {
    out: Vec<f64>,
    p: Vec<f64>,
    p_bits: Vec<u32>,
    out_bits: Vec<u32>,
}

/// The whole unfused forward on `qkv` [B,T,3C]: permute (kernel), S = Q K^T (host), causal softmax (kernel),
/// Y = P V (host), unpermute (kernel). Intermediates are stored in `dt`, like the GPU path.
fn unfused_forward(l: &dyn Launcher, dt: DType, qkv: &DBuf, b: usize, t: usize, nh: usize, hs: usize) -> Unfused {
    let (bh, c) = (b * nh, nh * hs);
    let (q, k, v) = (DBuf::poisoned(dt, bh * t * hs), DBuf::poisoned(dt, bh * t * hs), DBuf::poisoned(dt, bh * t * hs));
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::attention_permute(l, dt, q.ptr(), k.ptr(), v.ptr(), qkv.ptr(), b, t, nh, hs) }.unwrap();
    let s = DBuf::new(dt, &matmul_nt_f32(&q.get(), &k.get(), bh, t, t, hs));
    let p = DBuf::poisoned(dt, bh * t * t);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::softmax_causal(l, dt, p.ptr(), s.ptr(), bh, t, 1.0 / (hs as f32).sqrt()) }.unwrap();
    let y = DBuf::new(dt, &matmul_nn_f32(&p.get(), &v.get(), bh, t, hs, t));
    let out = DBuf::poisoned(dt, b * t * c);
    // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
    unsafe { kl::attention_unpermute(l, dt, out.ptr(), y.ptr(), b, t, nh, hs) }.unwrap();
    Unfused { out: out.get(), p: p.get(), p_bits: p.bits(), out_bits: out.bits() }
}

#[test]
fn kernels_are_in_the_simulator() {
    for op in ["attention_permute", "attention_unpermute", "softmax_causal"] {
        for dt in DTYPES {
            let n = format!("{op}_{}", dt.suffix());
            assert!(sim::has_kernel(&n), "{n} is not in the simulator");
        }
    }
    assert!(rlhf::kernels::SIM_FILES.contains(&"attention_unfused"));
}

/// permute and unpermute move elements without touching them: bit-exact copies, every element written.
#[test]
fn permute_unpermute_are_exact_copies() {
    let l = SimLauncher::new();
    for dt in DTYPES {
        for (i, &(b, t, nh, hs)) in SHAPES.iter().enumerate() {
            let c = nh * hs;
            let mut rng = Rng::new(10 + i as u64);
            let qkv = DBuf::new(dt, &randn(&mut rng, b * t * 3 * c, 1.0));
            let n = b * nh * t * hs;
            let (q, k, v) = (DBuf::poisoned(dt, n), DBuf::poisoned(dt, n), DBuf::poisoned(dt, n));
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::attention_permute(&l, dt, q.ptr(), k.ptr(), v.ptr(), qkv.ptr(), b, t, nh, hs) }.unwrap();
            let src = qkv.bits();
            let (qb, kb, vb) = (q.bits(), k.bits(), v.bits());
            for bi in 0..b {
                for h in 0..nh {
                    for ti in 0..t {
                        for d in 0..hs {
                            let dst = ((bi * nh + h) * t + ti) * hs + d;
                            let row = (bi * t + ti) * 3 * c + h * hs + d;
                            assert_eq!(qb[dst], src[row], "{dt:?} q b={bi} h={h} t={ti} d={d}");
                            assert_eq!(kb[dst], src[row + c], "{dt:?} k b={bi} h={h} t={ti} d={d}");
                            assert_eq!(vb[dst], src[row + 2 * c], "{dt:?} v b={bi} h={h} t={ti} d={d}");
                        }
                    }
                }
            }
            // unpermute(permute(qkv).v) is the v section of qkv
            let out = DBuf::poisoned(dt, b * t * c);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::attention_unpermute(&l, dt, out.ptr(), v.ptr(), b, t, nh, hs) }.unwrap();
            let ob = out.bits();
            for r in 0..b * t {
                assert_eq!(
                    &ob[r * c..(r + 1) * c],
                    &src[r * 3 * c + 2 * c..r * 3 * c + 3 * c],
                    "{dt:?} unpermute row {r}"
                );
            }
        }
    }
}

/// The assembled unfused forward against the CPU reference attention.
#[test]
fn unfused_forward_matches_cpu_attention() {
    let l = SimLauncher::new();
    for dt in DTYPES {
        for (i, &(b, t, nh, hs)) in SHAPES.iter().enumerate() {
            let c = nh * hs;
            let mut rng = Rng::new(20 + i as u64);
            let qkv = DBuf::new(dt, &randn(&mut rng, b * t * 3 * c, 1.0));
            let got = unfused_forward(&l, dt, &qkv, b, t, nh, hs);
            let (mut want, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
            let x = qkv.get();
            ops::attention::forward::<f64>(&mut want, &mut lse, &x, &x, &vec![0; b], b, t, t, c, nh, nh);
            let e = max_rel_err(&got.out, &want);
            println!("unfused {dt:?} B={b} T={t} NH={nh} HS={hs}: max error {e:.3e} of max |out|");
            assert!(e <= tol(dt), "unfused attention {dt:?} B={b} T={t} NH={nh} HS={hs}: {e:.3e} > {:.1e}", tol(dt));
            // P: exact +0 above the diagonal, rows summing to 1 up to the storage rounding
            for r in 0..b * nh * t {
                let ti = r % t;
                for j in ti + 1..t {
                    assert_eq!(got.p_bits[r * t + j], 0, "{dt:?} P row {r} col {j} above the diagonal is not +0");
                }
                let sum: f64 = got.p[r * t..r * t + ti + 1].iter().sum();
                let sum_tol = match dt {
                    DType::F32 => 1e-5,
                    DType::BF16 => (ti + 1) as f64 * 2f64.powi(-9),
                };
                assert!((sum - 1.0).abs() <= sum_tol, "{dt:?} P row {r} sums to {sum}");
            }
        }
    }
}

/// softmax_causal alone: never reads above the diagonal (NaN there), subtracts the row max (logits far beyond
/// exp's f32 range), writes exact zeros above the diagonal, and gives the same bits in place.
#[test]
fn softmax_causal_in_place_upper_triangle_and_rounding() {
    let l = SimLauncher::new();
    for dt in DTYPES {
        for (bh, t) in [(3usize, 70usize), (2, 33), (4, 1)] {
            let mut rng = Rng::new(30 + t as u64);
            let mut s = randn(&mut rng, bh * t * t, 3.0);
            let scale = 0.75f64;
            for r in 0..bh * t {
                let ti = r % t;
                for j in 0..t {
                    if j > ti {
                        s[r * t + j] = f64::NAN;
                    } else if r / t == 1 {
                        s[r * t + j] += 200.0; // scale * s ~ 150: exp overflows f32 without the max
                    }
                }
            }
            let sd = DBuf::new(dt, &s);
            let sv = sd.get(); // the stored (for bf16: rounded) scores
            let p = DBuf::poisoned(dt, bh * t * t);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::softmax_causal(&l, dt, p.ptr(), sd.ptr(), bh, t, scale as f32) }.unwrap();
            let (pv, pb) = (p.get(), p.bits());
            for r in 0..bh * t {
                let ti = r % t;
                let row = &sv[r * t..r * t + ti + 1];
                let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(scale * x));
                let z: f64 = row.iter().map(|&x| (scale * x - m).exp()).sum();
                for (j, &x) in row.iter().enumerate() {
                    let want = (scale * x - m).exp() / z;
                    let got = pv[r * t + j];
                    match dt {
                        // f32 math: the exponent scale*s - m is formed in f32, so it carries an absolute error
                        // of an ulp or two of |scale*s| and |m| (up to ~150 in the shifted rows), which exp turns
                        // into the same relative error of P; exp, the sum and the reciprocal add a few ulps
                        DType::F32 => {
                            let rel = 2f64.powi(-23) * ((scale * x).abs() + m.abs() + 8.0);
                            assert!((got - want).abs() <= rel * want + 1e-30, "f32 P[{r},{j}] = {got}, want {want}");
                        }
                        // then one round to nearest even bf16 (checked with `half`): the bf16 nearest to the exact
                        // value, or its neighbour when the exact value sits within the f32 error of the midpoint
                        DType::BF16 => {
                            let near = bf16::from_f64(want).to_f64();
                            let mid = (got + near) / 2.0;
                            let ok = got == near
                                || ((mid - want).abs() <= 1e-5 * want && bf16::from_f64(got).to_f64() == got);
                            assert!(ok, "bf16 P[{r},{j}] = {got}, want {want} (nearest bf16 {near})");
                        }
                    }
                }
                for j in ti + 1..t {
                    assert_eq!(pb[r * t + j], 0, "{dt:?} P[{r},{j}] above the diagonal is not +0");
                }
            }
            // in place: p == s gives the same bits
            let ip = DBuf::new(dt, &s);
            // SAFETY: every pointer is a live simulator buffer of the length the shapes passed require.
            unsafe { kl::softmax_causal(&l, dt, ip.ptr(), ip.ptr(), bh, t, scale as f32) }.unwrap();
            assert_eq!(ip.bits(), pb, "{dt:?} in-place softmax differs (BH={bh} T={t})");
        }
        // empty launches are no-ops
        // SAFETY (the three calls): zero elements, so no pointer is dereferenced (nothing is launched).
        unsafe {
            kl::softmax_causal(&l, dt, 0, 0, 0, 5, 1.0).unwrap();
            kl::attention_permute(&l, dt, 0, 0, 0, 0, 0, 5, 2, 8).unwrap();
            kl::attention_unpermute(&l, dt, 0, 0, 2, 0, 2, 8).unwrap();
        }
    }
}

/// Random block order and thread interleaving give the same bits (the kernels share nothing between threads
/// beyond the warp reductions).
#[test]
fn race_mode_same_bits() {
    for dt in DTYPES {
        let (b, t, nh, hs) = SHAPES[0];
        let qkv = DBuf::new(dt, &randn(&mut Rng::new(40), b * t * 3 * nh * hs, 1.0));
        let a = unfused_forward(&SimLauncher::ordered(), dt, &qkv, b, t, nh, hs);
        for seed in [1u64, 2] {
            let r = unfused_forward(&SimLauncher::racy(seed), dt, &qkv, b, t, nh, hs);
            assert_eq!(r.p_bits, a.p_bits, "{dt:?} P differs under race mode seed {seed}");
            assert_eq!(r.out_bits, a.out_bits, "{dt:?} output differs under race mode seed {seed}");
        }
    }
}
