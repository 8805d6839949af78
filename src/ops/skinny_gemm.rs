//! Matrix products with few rows (a decode step: one row per sequence) against weights read where they lie,
//! without the packed copy of them that a general GEMM makes on every call.
//!
//! out[M,N] (+)= a[M,K] @ op(w) for MIN_ROWS <= M <= MAX_ROWS, op(w) = w with w [K,N] (a linear layer) or
//! w^T with w [N,K] (the tied LM head). At these M the weights are most of the memory traffic (K*N values
//! against M*K), so copying them into panels first costs about as much as the product itself.
//!
//! One microkernel does both: a tile of R <= 6 rows x 16 columns held in 12 AVX2 registers, over a block of
//! KC terms: acc[r][c] += x[r][p] * y[p][c], x read one broadcast at a time along its rows, y as two 8-wide
//! loads of 16 contiguous values.
//! - w [K,N]: x = a (rows of the batch), y = w's rows (16 columns, row stride N).
//! - w [N,K]: out^T [N,M] = w @ a^T, so x = w (six vocabulary rows at a time) and y = a^T, copied into strips
//!   of 16 columns (M*K values, small); the tile is stored transposed.
//!
//! Each output is one fused multiply-add chain over k in order, the KC blocks added to `out` in order, and
//! the parallel tasks are fixed blocks of columns (or vocabulary rows): the result does not depend on the
//! number of threads.

use super::SharedMut;
use rayon::prelude::*;
use std::arch::x86_64::*;

/// Fewest rows taken: below, the general GEMM's matrix-vector path is faster.
pub const MIN_ROWS: usize = 4;
/// Most rows taken: beyond, packing the weights pays for itself in the general GEMM.
pub const MAX_ROWS: usize = 64;
/// Rows of a tile (6 x 2 accumulators, 2 loads and a broadcast: 15 of the 16 AVX2 registers).
const MR: usize = 6;
/// Columns of a tile: two 8-wide registers.
const NR: usize = 16;
/// Terms per block: keeps a block of w's strip (KC x 16 x 4 B = 16 KB) and of x in the L1/L2 caches.
const KC: usize = 256;
/// Output columns per task (w [K,N]) and vocabulary rows per task (w [N,K]).
const TASK_COLS: usize = 64;
const TASK_ROWS: usize = 48;
/// Products smaller than this (M*N*K) run on the calling thread.
const PARALLEL_MIN: usize = 1 << 18;

/// Whether `matmul` sends an out = a @ op(w) of `m` rows here (a not transposed).
pub fn takes(m: usize, ta: bool) -> bool {
    !ta && (MIN_ROWS..=MAX_ROWS).contains(&m)
}

/// out[m,n] (+)= a[m,k] @ op(w): w [k,n], or w [n,k] when `tw` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn matmul(out: &mut [f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize, tw: bool, accumulate: bool) {
    assert!(out.len() >= m * n && a.len() >= m * k && w.len() >= k * n, "skinny matmul: buffers too small");
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    if tw {
        by_vocabulary_rows(out, a, w, m, n, k, accumulate)
    } else {
        by_columns(out, a, w, m, n, k, accumulate)
    }
}

fn run_tasks(tasks: usize, work: usize, run: impl Fn(usize) + Sync + Send) {
    if work < PARALLEL_MIN {
        (0..tasks).for_each(run)
    } else {
        (0..tasks).into_par_iter().for_each(run)
    }
}

/// w [K,N]: task t owns out[:, 64t..64t+64].
fn by_columns(out: &mut [f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    let o = SharedMut(out.as_mut_ptr());
    run_tasks(n.div_ceil(TASK_COLS), m * n * k, |t| {
        // The last strip when N is not a multiple of 16, copied with zeros beyond N (a tile reads 16 columns).
        let mut tail = Vec::new();
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for j0 in (t * TASK_COLS..((t + 1) * TASK_COLS).min(n)).step_by(NR) {
                let cols = NR.min(n - j0);
                let (y, ys) = if cols == NR {
                    (w[k0 * n + j0..].as_ptr(), n)
                } else {
                    tail.clear();
                    for p in k0..k0 + kc {
                        tail.extend_from_slice(&w[p * n + j0..p * n + n]);
                        tail.resize((p - k0 + 1) * NR, 0.0);
                    }
                    (tail.as_ptr(), NR)
                };
                let (x, out, add) = (a[k0..].as_ptr(), o.ptr().wrapping_add(j0), accumulate || k0 > 0);
                // SAFETY: x = a[i*k + k0 + p] and y = w[(k0+p)*n + j0 + c] (or the tail copy) for p < kc, c < 16
                // are inside the asserted buffers; the task writes only out[:, j0..j0 + cols] of its own block.
                unsafe { tiles(m, Block { x, xs: k, y, ys, kc, out, ors: n, ocs: 1, cols, add }) };
            }
        }
    });
}

/// w [N,K]: out^T = w @ a^T; task t owns vocabulary rows 48t..48t+48 (columns of out).
fn by_vocabulary_rows(out: &mut [f32], a: &[f32], w: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    // a^T in strips of 16 rows of a: strips[s][p][c] = a[16s + c][p], zeros beyond m.
    let strips = m.div_ceil(NR);
    let mut at = vec![0f32; strips * k * NR];
    for (i, row) in a.chunks(k).take(m).enumerate() {
        let (s, c) = (i / NR, i % NR);
        for (p, &x) in row.iter().enumerate() {
            at[(s * k + p) * NR + c] = x;
        }
    }
    let o = SharedMut(out.as_mut_ptr());
    run_tasks(n.div_ceil(TASK_ROWS), m * n * k, |t| {
        let (j0, j1) = (t * TASK_ROWS, ((t + 1) * TASK_ROWS).min(n));
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for s in 0..strips {
                let cols = NR.min(m - s * NR);
                let block = Block {
                    x: w[j0 * k + k0..].as_ptr(),
                    xs: k,
                    y: at[(s * k + k0) * NR..].as_ptr(),
                    ys: NR,
                    kc,
                    out: o.ptr().wrapping_add(s * NR * n + j0),
                    ors: 1,
                    ocs: n,
                    cols,
                    add: accumulate || k0 > 0,
                };
                // SAFETY: x = w[(j0+r)*k + k0 + p] for r < j1 - j0, p < kc and y = at[(s*k + k0 + p)*16 + c] are
                // inside their buffers; out(r, c) = out[(16s + c)*n + j0 + r] for c < cols <= m - 16s lies in the
                // task's own columns j0..j1.
                unsafe { tiles(j1 - j0, block) };
            }
        }
    });
}

/// One block of the product: out(r, c) (+)= sum_{p < kc} x[r*xs + p] * y[p*ys + c], where out(r, c) is
/// out[r*ors + c*ocs], for c < cols (y holds 16 readable columns); `add`: add to what out holds.
#[derive(Clone, Copy)]
struct Block {
    x: *const f32,
    xs: usize,
    y: *const f32,
    ys: usize,
    kc: usize,
    out: *mut f32,
    ors: usize,
    ocs: usize,
    cols: usize,
    add: bool,
}

/// `rows` rows of the block in tiles of 6 (then one tile of the rest), against the same 16 columns of y.
#[inline(always)]
unsafe fn tiles(rows: usize, b: Block) {
    let at = |r: usize| Block { x: b.x.add(r * b.xs), out: b.out.add(r * b.ors), ..b };
    let mut r = 0;
    while r + MR <= rows {
        tile::<MR>(at(r));
        r += MR;
    }
    match rows - r {
        0 => {}
        1 => tile::<1>(at(r)),
        2 => tile::<2>(at(r)),
        3 => tile::<3>(at(r)),
        4 => tile::<4>(at(r)),
        _ => tile::<5>(at(r)),
    }
}

/// Rows 0..R of the block.
#[inline(always)]
unsafe fn tile<const R: usize>(b: Block) {
    let Block { x, xs, y, ys, kc, out, ors, ocs, cols, add } = b;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for p in 0..kc {
        let (y0, y1) = (_mm256_loadu_ps(y.add(p * ys)), _mm256_loadu_ps(y.add(p * ys + 8)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let xv = _mm256_set1_ps(*x.add(r * xs + p));
            acc[0] = _mm256_fmadd_ps(xv, y0, acc[0]);
            acc[1] = _mm256_fmadd_ps(xv, y1, acc[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let o = out.add(r * ors);
        if ocs == 1 && cols == NR {
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if add {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(o));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(o.add(8)));
            }
            _mm256_storeu_ps(o, v0);
            _mm256_storeu_ps(o.add(8), v1);
        } else {
            let mut v = [0f32; NR];
            _mm256_storeu_ps(v.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(v.as_mut_ptr().add(8), acc[1]);
            for (c, &v) in v.iter().enumerate().take(cols) {
                let o = o.add(c * ocs);
                *o = if add { *o + v } else { v };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// Every edge of the tiling (rows not a multiple of 6 or 16, columns not a multiple of 16, 48 or 64,
    /// k across several KC blocks and below one, both layouts, overwrite and accumulate) against the
    /// product in f64. Tolerance: each output is a chain of k f32 fused multiply-adds plus at most
    /// k / KC + 2 additions (the blocks, the accumulated value), each rounding by at most 2^-24 of a partial
    /// sum no larger than sum_p |a_p w_p| + |out|: (k + 8) * 2^-24 times that bounds the error.
    #[test]
    fn matches_the_f64_product_on_every_edge_of_the_tiling() {
        let mut rng = Rng::new(5);
        for &m in &[4, 5, 6, 7, 13, 16, 17, 64] {
            for &n in &[1, 15, 16, 17, 50, 100] {
                for &k in &[0, 1, 7, 256, 257, 600] {
                    for tw in [false, true] {
                        for accumulate in [false, true] {
                            let a: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
                            let w: Vec<f32> = (0..k * n).map(|_| rng.normal() as f32).collect();
                            let before: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
                            let mut out = before.clone();
                            matmul(&mut out, &a, &w, m, n, k, tw, accumulate);
                            for i in 0..m {
                                for j in 0..n {
                                    let wv = |p: usize| if tw { w[j * k + p] } else { w[p * n + j] } as f64;
                                    let terms = (0..k).map(|p| a[i * k + p] as f64 * wv(p));
                                    let (mut want, bound) =
                                        terms.fold((0.0, 0.0), |(s, b), t: f64| (s + t, b + t.abs()));
                                    if accumulate {
                                        want += before[i * n + j] as f64;
                                    }
                                    let got = out[i * n + j] as f64;
                                    let tol =
                                        (k + 8) as f64 * 2f64.powi(-24) * (bound + before[i * n + j].abs() as f64);
                                    assert!(
                                        (got - want).abs() <= tol,
                                        "m {m} n {n} k {k} tw {tw} acc {accumulate} at ({i},{j}): {got} vs {want}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
