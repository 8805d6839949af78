//! Launcher of `kernels/entropy.cu`: `entropy_{f32,bf16}` (entropy of the tempered softmax and its weighted
//! gradient, one block of [`ENTROPY_BLOCK`] threads per row).

use super::geometry::ENTROPY_BLOCK;
use super::{aligned16, i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{ensure, Result};

/// ent[N] (f32) and, with want_grad, dlogits[N,Vp] = coef-weighted dH/dlogits (see kernels/entropy.cu);
/// coef [N] f32. Without want_grad `dlogits` may be 0.
///
/// # Safety
/// The [module contract](super) for `ent` (`n` f32), `logits` (`n * vp` elements of `dt`), `coef`
/// (`n` f32) and, with `want_grad`, `dlogits` (`n * vp` elements of `dt`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn entropy(
    l: &dyn Launcher,
    dt: DType,
    ent: DevPtr,
    dlogits: DevPtr,
    logits: DevPtr,
    coef: DevPtr,
    n: usize,
    v: usize,
    vp: usize,
    inv_temp: f32,
    want_grad: bool,
) -> Result<()> {
    ensure!(v >= 1 && v <= vp, "entropy: need 1 <= V ({v}) <= Vp ({vp})");
    ensure!(!want_grad || dlogits != 0, "entropy: want_grad without a dlogits buffer");
    i32_of(n * vp, "N*Vp")?;
    if vp.is_multiple_of(dt.pack()) {
        aligned16(&[logits, if want_grad { dlogits } else { 0 }], "entropy")?;
    }
    if n == 0 {
        return Ok(());
    }
    l.launch(
        &k("entropy", dt),
        LaunchConfig { grid: [n as u32, 1, 1], block: [ENTROPY_BLOCK, 1, 1], smem: 0 },
        &[
            Arg::Ptr(ent),
            Arg::Ptr(dlogits),
            Arg::Ptr(logits),
            Arg::Ptr(coef),
            Arg::I32(v as i32),
            Arg::I32(vp as i32),
            Arg::F32(inv_temp),
            Arg::I32(want_grad as i32),
        ],
    )
}
