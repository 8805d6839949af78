//! Launchers of `kernels/swiglu.cu`: `swiglu_forward_{f32,bf16}`, `swiglu_backward_{f32,bf16}` (one thread
//! per chunk of output elements, [`EW_BLOCK`] threads per block).

use super::geometry::EW_BLOCK;
use super::{aligned16, i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// One thread per chunk of the output: a 16-byte pack when F is a multiple of it (the pointers must then be
/// 16-byte aligned), else one element (`RLHF_CHUNK_DISPATCH` in kernels/common.cuh picks the same width).
fn swiglu_cfg(dt: DType, n: usize, f: usize, ptrs: &[DevPtr], kernel: &str) -> Result<LaunchConfig> {
    i32_of(n * 2 * f, "N*2F")?;
    let w = if f.is_multiple_of(dt.pack()) { dt.pack() } else { 1 };
    if w > 1 {
        aligned16(ptrs, kernel)?;
    }
    Ok(LaunchConfig::linear((n * f).div_ceil(w), EW_BLOCK))
}

/// out[N,F] = silu(inp[:, ..F]) * inp[:, F..] of the packed inp [N, 2F].
///
/// # Safety
/// The [module contract](super) for `out` (`n * f` elements of `dt`) and `inp` (`n * 2f`).
pub unsafe fn swiglu_forward(l: &dyn Launcher, dt: DType, out: DevPtr, inp: DevPtr, n: usize, f: usize) -> Result<()> {
    let name = k("swiglu_forward", dt);
    let cfg = swiglu_cfg(dt, n, f, &[out, inp], &name)?;
    l.launch(&name, cfg, &[Arg::Ptr(out), Arg::Ptr(inp), Arg::I32(n as i32), Arg::I32(f as i32)])
}

/// dinp[N,2F] = [dgate | dup] from dout [N,F] and the forward's inp [N,2F] (overwrites).
///
/// # Safety
/// The [module contract](super) for `dinp`, `inp` (`n * 2f` elements of `dt` each) and `dout` (`n * f`).
pub unsafe fn swiglu_backward(
    l: &dyn Launcher,
    dt: DType,
    dinp: DevPtr,
    dout: DevPtr,
    inp: DevPtr,
    n: usize,
    f: usize,
) -> Result<()> {
    let name = k("swiglu_backward", dt);
    let cfg = swiglu_cfg(dt, n, f, &[dinp, dout, inp], &name)?;
    l.launch(&name, cfg, &[Arg::Ptr(dinp), Arg::Ptr(dout), Arg::Ptr(inp), Arg::I32(n as i32), Arg::I32(f as i32)])
}
