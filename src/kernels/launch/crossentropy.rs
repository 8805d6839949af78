//! Launcher of `kernels/crossentropy.cu`: `crossentropy_{f32,bf16}` (fused softmax + cross-entropy, one
//! block of [`CE_BLOCK`] threads per row).

use super::geometry::CE_BLOCK;
use super::{aligned16, i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{ensure, Result};

/// losses[N] (f32) and, with want_grad, logits[N,Vp] overwritten by dlogits (see kernels/crossentropy.cu).
/// targets [N] u32, weights [N] f32.
///
/// # Safety
/// The [module contract](super) for `losses` (`n` f32), `logits` (`n * vp` elements of `dt`), `targets`
/// (`n` u32, each below `v`) and `weights` (`n` f32).
#[allow(clippy::too_many_arguments)]
pub unsafe fn crossentropy(
    l: &dyn Launcher,
    dt: DType,
    losses: DevPtr,
    logits: DevPtr,
    targets: DevPtr,
    weights: DevPtr,
    n: usize,
    v: usize,
    vp: usize,
    inv_temp: f32,
    want_grad: bool,
) -> Result<()> {
    ensure!(v >= 1 && v <= vp, "crossentropy: need 1 <= V ({v}) <= Vp ({vp})");
    i32_of(n * vp, "N*Vp")?;
    if vp.is_multiple_of(dt.pack()) {
        aligned16(&[logits], "crossentropy")?;
    }
    if n == 0 {
        return Ok(());
    }
    l.launch(
        &k("crossentropy", dt),
        LaunchConfig { grid: [n as u32, 1, 1], block: [CE_BLOCK, 1, 1], smem: 0 },
        &[
            Arg::Ptr(losses),
            Arg::Ptr(logits),
            Arg::Ptr(targets),
            Arg::Ptr(weights),
            Arg::I32(v as i32),
            Arg::I32(vp as i32),
            Arg::F32(inv_temp),
            Arg::I32(want_grad as i32),
        ],
    )
}
