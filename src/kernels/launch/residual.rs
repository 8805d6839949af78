//! Launchers of `kernels/residual.cu`: `add_*`, `accumulate_*`, `scale_*` (one thread per 16-byte pack) and
//! the casts `cast_f32_to_bf16`, `cast_bf16_to_f32` (one thread per element); [`EW_BLOCK`] threads per block.

use super::geometry::EW_BLOCK;
use super::{aligned16, i32_of, k, packed_cfg, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// out = a + b.
///
/// # Safety
/// The [module contract](super) for `out`, `a` and `b`: `n` elements of `dt` each.
pub unsafe fn add(l: &dyn Launcher, dt: DType, out: DevPtr, a: DevPtr, b: DevPtr, n: usize) -> Result<()> {
    let name = k("add", dt);
    aligned16(&[out, a, b], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(out), Arg::Ptr(a), Arg::Ptr(b), Arg::I32(i32_of(n, "n")?)])
}

/// dst += src.
///
/// # Safety
/// The [module contract](super) for `dst` and `src`: `n` elements of `dt` each.
pub unsafe fn accumulate(l: &dyn Launcher, dt: DType, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    let name = k("accumulate", dt);
    aligned16(&[dst, src], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)])
}

/// buf *= s.
///
/// # Safety
/// The [module contract](super) for `buf`: `n` elements of `dt`.
pub unsafe fn scale(l: &dyn Launcher, dt: DType, buf: DevPtr, s: f32, n: usize) -> Result<()> {
    let name = k("scale", dt);
    aligned16(&[buf], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(buf), Arg::F32(s), Arg::I32(i32_of(n, "n")?)])
}

/// dst (bf16) = round-to-nearest-even(src (f32)).
///
/// # Safety
/// The [module contract](super) for `dst` (`n` bf16) and `src` (`n` f32).
pub unsafe fn cast_f32_to_bf16(l: &dyn Launcher, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    l.launch(
        "cast_f32_to_bf16",
        LaunchConfig::linear(n, EW_BLOCK),
        &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)],
    )
}

/// dst (f32) = src (bf16).
///
/// # Safety
/// The [module contract](super) for `dst` (`n` f32) and `src` (`n` bf16).
pub unsafe fn cast_bf16_to_f32(l: &dyn Launcher, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    l.launch(
        "cast_bf16_to_f32",
        LaunchConfig::linear(n, EW_BLOCK),
        &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)],
    )
}
