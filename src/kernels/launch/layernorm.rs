//! Launchers of `kernels/layernorm.cu`: `layernorm_forward_*`, `residual_layernorm_forward_*`,
//! `layernorm_backward_dinp_*`, `layernorm_backward_partial_*` (a `colsum_partial` of `kernels/colsum.cuh`)
//! and the `colsum_finalize_*` of [`super::linear`]. One warp per row, [`LN_BLOCK`] threads per block.

use super::geometry::{COLSUM_ROWS, LN_BLOCK};
use super::linear::{colsum_chunks, colsum_finalize, colsum_partial_cfg};
use super::{aligned16, i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// The layernorm kernels read rows in 16-byte packs when C is a multiple of the pack (kernels/layernorm.cu):
/// their row pointers must then be 16-byte aligned.
fn ln_aligned(dt: DType, c: usize, ptrs: &[DevPtr], kernel: &str) -> Result<()> {
    if c.is_multiple_of(dt.pack()) {
        aligned16(&ptrs.iter().copied().filter(|&p| p != 0).collect::<Vec<_>>(), kernel)?;
    }
    Ok(())
}

/// out[N,C] = layernorm(inp) * w + b; mean, rstd: f32 [N] (either may be 0 = not stored).
///
/// # Safety
/// The [module contract](super) for `out`, `inp` (`n * c` elements of `dt`), `w`, `b` (`c`) and `mean`,
/// `rstd` (`n` f32 each, or 0).
#[allow(clippy::too_many_arguments)]
pub unsafe fn layernorm_forward(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    b: DevPtr,
    n: usize,
    c: usize,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[out, inp, w, b], "layernorm_forward")?;
    l.launch(
        &k("layernorm_forward", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(out),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(inp),
            Arg::Ptr(w),
            Arg::Ptr(b),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ],
    )
}

/// residual[N,C] = a + b, then out = layernorm(residual) * w + bias with the stored residual's statistics
/// (mean, rstd f32 [N], either may be 0): `add` and `layernorm_forward` in one pass.
///
/// # Safety
/// The [module contract](super) for `residual`, `out`, `a`, `b` (`n * c` elements of `dt`), `w`, `bias`
/// (`c`) and `mean`, `rstd` (`n` f32 each, or 0).
#[allow(clippy::too_many_arguments)]
pub unsafe fn residual_layernorm_forward(
    l: &dyn Launcher,
    dt: DType,
    residual: DevPtr,
    out: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    a: DevPtr,
    b: DevPtr,
    w: DevPtr,
    bias: DevPtr,
    n: usize,
    c: usize,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[residual, out, a, b, w, bias], "residual_layernorm_forward")?;
    l.launch(
        &k("residual_layernorm_forward", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(residual),
            Arg::Ptr(out),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(w),
            Arg::Ptr(bias),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ],
    )
}

pub fn layernorm_backward_scratch_bytes(n: usize, c: usize) -> usize {
    2 * colsum_chunks(n) * c * 4
}

/// dinp[N,C] += ..., dw[C] += ..., db[C] += ... (see kernels/layernorm.cu); mean, rstd f32 from the forward.
///
/// # Safety
/// The [module contract](super) for `dinp`, `dout`, `inp` (`n * c` elements of `dt`), `dw`, `db`, `w`
/// (`c`), `mean`, `rstd` (`n` f32) and `scratch` ([`layernorm_backward_scratch_bytes`] bytes).
#[allow(clippy::too_many_arguments)]
pub unsafe fn layernorm_backward(
    l: &dyn Launcher,
    dt: DType,
    dinp: DevPtr,
    dw: DevPtr,
    db: DevPtr,
    dout: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    n: usize,
    c: usize,
    scratch: DevPtr,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[dinp, dout, inp, w], "layernorm_backward")?;
    let (ni, ci) = (n as i32, c as i32);
    l.launch(
        &k("layernorm_backward_dinp", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(dinp),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(w),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::I32(ni),
            Arg::I32(ci),
        ],
    )?;
    l.launch(
        &k("layernorm_backward_partial", dt),
        colsum_partial_cfg(n, c),
        &[
            Arg::Ptr(scratch),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::I32(ni),
            Arg::I32(ci),
            Arg::I32(COLSUM_ROWS as i32),
        ],
    )?;
    colsum_finalize(l, dt, dw, db, scratch, colsum_chunks(n), c)
}
