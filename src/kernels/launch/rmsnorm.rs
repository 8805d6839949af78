//! Launchers of `kernels/rmsnorm.cu`: `rmsnorm_forward_*`, `rmsnorm_backward_dinp_*`,
//! `rmsnorm_backward_partial_*` (a `colsum_partial` of `kernels/colsum.cuh`) and the `colsum_finalize_*` of
//! [`super::linear`]. One warp per row, [`RMS_BLOCK`] threads per block.

use super::geometry::{COLSUM_ROWS, RMS_BLOCK};
use super::linear::{colsum_chunks, colsum_finalize, colsum_partial_cfg};
use super::{aligned16, i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// The rmsnorm kernels read rows in 16-byte packs when C is a multiple of the pack: their row pointers must
/// then be 16-byte aligned.
fn rms_aligned(dt: DType, c: usize, ptrs: &[DevPtr], kernel: &str) -> Result<()> {
    if c.is_multiple_of(dt.pack()) {
        aligned16(ptrs, kernel)?;
    }
    Ok(())
}

/// out[N,C] = rmsnorm(inp) * w; rstd: f32 [N] (0 = not stored). `eps` is rounded to f32.
///
/// # Safety
/// The [module contract](super) for `out`, `inp` (`n * c` elements of `dt`), `w` (`c`) and `rstd` (`n` f32,
/// or 0).
#[allow(clippy::too_many_arguments)]
pub unsafe fn rmsnorm_forward(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    rstd: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    n: usize,
    c: usize,
    eps: f64,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    rms_aligned(dt, c, &[out, inp, w], "rmsnorm_forward")?;
    l.launch(
        &k("rmsnorm_forward", dt),
        LaunchConfig::linear(n * 32, RMS_BLOCK),
        &[
            Arg::Ptr(out),
            Arg::Ptr(rstd),
            Arg::Ptr(inp),
            Arg::Ptr(w),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
            Arg::F32(eps as f32),
        ],
    )
}

pub fn rmsnorm_backward_scratch_bytes(n: usize, c: usize) -> usize {
    colsum_chunks(n) * c * 4
}

/// dinp[N,C] += ..., dw[C] += ... (see kernels/rmsnorm.cu); rstd f32 from the forward.
///
/// # Safety
/// The [module contract](super) for `dinp`, `dout`, `inp` (`n * c` elements of `dt`), `dw`, `w` (`c`), `rstd`
/// (`n` f32) and `scratch` ([`rmsnorm_backward_scratch_bytes`] bytes).
#[allow(clippy::too_many_arguments)]
pub unsafe fn rmsnorm_backward(
    l: &dyn Launcher,
    dt: DType,
    dinp: DevPtr,
    dw: DevPtr,
    dout: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    rstd: DevPtr,
    n: usize,
    c: usize,
    scratch: DevPtr,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    rms_aligned(dt, c, &[dinp, dout, inp, w], "rmsnorm_backward")?;
    let (ni, ci) = (n as i32, c as i32);
    l.launch(
        &k("rmsnorm_backward_dinp", dt),
        LaunchConfig::linear(n * 32, RMS_BLOCK),
        &[Arg::Ptr(dinp), Arg::Ptr(dout), Arg::Ptr(inp), Arg::Ptr(w), Arg::Ptr(rstd), Arg::I32(ni), Arg::I32(ci)],
    )?;
    l.launch(
        &k("rmsnorm_backward_partial", dt),
        colsum_partial_cfg(n, c),
        &[
            Arg::Ptr(scratch),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(rstd),
            Arg::I32(ni),
            Arg::I32(ci),
            Arg::I32(COLSUM_ROWS as i32),
        ],
    )?;
    colsum_finalize(l, dt, dw, 0, scratch, colsum_chunks(n), c)
}
