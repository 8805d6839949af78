//! Launchers of `kernels/gelu.cu`: `gelu_forward_{f32,bf16}`, `gelu_backward_{f32,bf16}` (one thread per
//! 16-byte pack, [`EW_BLOCK`](super::geometry::EW_BLOCK) threads per block).

use super::{aligned16, i32_of, k, packed_cfg, Arg, DType, DevPtr, Launcher};
use anyhow::Result;

/// out[n] = gelu(inp[n]) (tanh form).
///
/// # Safety
/// The [module contract](super) for `out` and `inp`: `n` elements of `dt` each.
pub unsafe fn gelu_forward(l: &dyn Launcher, dt: DType, out: DevPtr, inp: DevPtr, n: usize) -> Result<()> {
    let name = k("gelu_forward", dt);
    aligned16(&[out, inp], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(out), Arg::Ptr(inp), Arg::I32(i32_of(n, "n")?)])
}

/// dinp[n] = gelu'(inp) * dout (overwrites).
///
/// # Safety
/// The [module contract](super) for `dinp`, `inp` and `dout`: `n` elements of `dt` each.
pub unsafe fn gelu_backward(
    l: &dyn Launcher,
    dt: DType,
    dinp: DevPtr,
    inp: DevPtr,
    dout: DevPtr,
    n: usize,
) -> Result<()> {
    let name = k("gelu_backward", dt);
    aligned16(&[dinp, inp, dout], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(dinp), Arg::Ptr(inp), Arg::Ptr(dout), Arg::I32(i32_of(n, "n")?)])
}
