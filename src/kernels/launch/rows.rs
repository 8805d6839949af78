//! Launcher of `kernels/rows.cu`: `copy_rows_{f32,bf16}` (row gather/scatter through a table of
//! (destination, source) row pairs, one block of [`EW_BLOCK`] threads per pair).

use super::geometry::EW_BLOCK;
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// dst[d * w ..][..w] = src[s * w ..][..w] for each of the `n` pairs (d, s) of `pairs` (u32, interleaved).
///
/// # Safety
/// The [module contract](super) for `pairs` (`2 n` u32) and, for every pair, `dst` (row d of `w` elements of
/// `dt`, the rows d of the pairs distinct) and `src` (row s of `w` elements of `dt`); `dst` and `src` must not
/// overlap.
pub unsafe fn copy_rows(
    l: &dyn Launcher,
    dt: DType,
    dst: DevPtr,
    src: DevPtr,
    pairs: DevPtr,
    n: usize,
    w: usize,
) -> Result<()> {
    if n == 0 || w == 0 {
        return Ok(());
    }
    l.launch(
        &k("copy_rows", dt),
        LaunchConfig { grid: [i32_of(n, "rows")? as u32, 1, 1], block: [EW_BLOCK, 1, 1], smem: 0 },
        &[Arg::Ptr(dst), Arg::Ptr(src), Arg::Ptr(pairs), Arg::I32(i32_of(w, "row width")?)],
    )
}
