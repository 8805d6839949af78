//! Launchers of `kernels/linear.cu`: `bias_add_*`, the bias gradient `bias_backward_partial_*` (a
//! `colsum_partial` of `kernels/colsum.cuh`) and `colsum_finalize_*`; also the column-sum geometry that
//! layernorm's parameter gradients ([`super::layernorm`]) share.

use super::geometry::{COLSUM_COLS, COLSUM_LANES, COLSUM_ROWS, EW_BLOCK};
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// Partials (row chunks of [`COLSUM_ROWS`]) of the deterministic column sums over `n` rows.
pub(super) fn colsum_chunks(n: usize) -> usize {
    n.div_ceil(COLSUM_ROWS as usize).max(1)
}

/// Grid (column tiles, row chunks), block ([`COLSUM_COLS`], [`COLSUM_LANES`]) of `colsum_partial`.
pub(super) fn colsum_partial_cfg(n: usize, c: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [c.div_ceil(COLSUM_COLS as usize) as u32, colsum_chunks(n) as u32, 1],
        block: [COLSUM_COLS, COLSUM_LANES, 1],
        smem: 0,
    }
}

/// dst0[c] += sum of partial[0..r][c]; dst1 (if not 0) the same over the second block of `r` partials.
///
/// # Safety
/// The [module contract](super) for `dst0`, `dst1` (if not 0: `c` elements of `dt` each) and `partial`
/// (`r * c` f32, twice that with `dst1`).
pub(super) unsafe fn colsum_finalize(
    l: &dyn Launcher,
    dt: DType,
    dst0: DevPtr,
    dst1: DevPtr,
    partial: DevPtr,
    r: usize,
    c: usize,
) -> Result<()> {
    l.launch(
        &k("colsum_finalize", dt),
        LaunchConfig::linear(c, EW_BLOCK),
        &[Arg::Ptr(dst0), Arg::Ptr(dst1), Arg::Ptr(partial), Arg::I32(i32_of(r, "chunks")?), Arg::I32(i32_of(c, "C")?)],
    )
}

/// out[N,OC] += bias[OC].
///
/// # Safety
/// The [module contract](super) for `out` (`n * oc` elements of `dt`) and `bias` (`oc`).
pub unsafe fn bias_add(l: &dyn Launcher, dt: DType, out: DevPtr, bias: DevPtr, n: usize, oc: usize) -> Result<()> {
    i32_of(n * oc, "N*OC")?;
    l.launch(
        &k("bias_add", dt),
        LaunchConfig::linear(n * oc, EW_BLOCK),
        &[Arg::Ptr(out), Arg::Ptr(bias), Arg::I32(n as i32), Arg::I32(oc as i32)],
    )
}

pub fn bias_backward_scratch_bytes(n: usize, oc: usize) -> usize {
    colsum_chunks(n) * oc * 4
}

/// dbias[OC] += column sums of dout[N,OC] (deterministic: fixed-order partials, no atomics).
///
/// # Safety
/// The [module contract](super) for `dbias` (`oc` elements of `dt`), `dout` (`n * oc`) and `scratch`
/// ([`bias_backward_scratch_bytes`] bytes).
pub unsafe fn bias_backward(
    l: &dyn Launcher,
    dt: DType,
    dbias: DevPtr,
    dout: DevPtr,
    n: usize,
    oc: usize,
    scratch: DevPtr,
) -> Result<()> {
    i32_of(n * oc, "N*OC")?;
    l.launch(
        &k("bias_backward_partial", dt),
        colsum_partial_cfg(n, oc),
        &[Arg::Ptr(scratch), Arg::Ptr(dout), Arg::I32(n as i32), Arg::I32(oc as i32), Arg::I32(COLSUM_ROWS as i32)],
    )?;
    colsum_finalize(l, dt, dbias, 0, scratch, colsum_chunks(n), oc)
}
