//! Launchers of `kernels/rope.cu`: `rope_forward_{f32,bf16}`, `rope_backward_{f32,bf16}` (one thread per
//! rotated pair of a q or k head, [`EW_BLOCK`] threads per block).

use super::geometry::EW_BLOCK;
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{ensure, Result};

/// The shapes of one launch: `b` rows of `t` positions, `nh` query heads and `nkv` key/value heads of size `hs`.
#[derive(Clone, Copy, Debug)]
pub struct RopeShape {
    pub b: usize,
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hs: usize,
}

/// # Safety
/// The [module contract](super) for `qkv` (`b * t * (nh + 2 nkv) * hs` elements of `dt`), `inv_freq`
/// (`hs / 2` f32) and `pos0` (`b` u32).
unsafe fn rope(
    l: &dyn Launcher,
    name: &str,
    dt: DType,
    qkv: DevPtr,
    inv_freq: DevPtr,
    pos0: DevPtr,
    s: RopeShape,
) -> Result<()> {
    ensure!(s.hs > 0 && s.hs.is_multiple_of(2), "{name}: head size {} must be even", s.hs);
    i32_of(s.b * s.t * (s.nh + 2 * s.nkv) * s.hs, "B*T*(NH+2NKV)*HS")?;
    let threads = s.b * s.t * (s.nh + s.nkv) * s.hs / 2;
    l.launch(
        &k(name, dt),
        LaunchConfig::linear(threads, EW_BLOCK),
        &[
            Arg::Ptr(qkv),
            Arg::Ptr(inv_freq),
            Arg::Ptr(pos0),
            Arg::I32(s.b as i32),
            Arg::I32(s.t as i32),
            Arg::I32(s.nh as i32),
            Arg::I32(s.nkv as i32),
            Arg::I32((s.hs / 2) as i32),
        ],
    )
}

/// The q and k heads of qkv rotated in place to positions pos0[b] + t (contract of `crate::ops::rope::forward`);
/// inv_freq is the f32 rounding of `Rope::inv_freq`.
///
/// # Safety
/// The [module contract](super) for `qkv` (`b * t * (nh + 2 nkv) * hs` elements of `dt`), `inv_freq`
/// (`hs / 2` f32) and `pos0` (`b` u32).
pub unsafe fn rope_forward(
    l: &dyn Launcher,
    dt: DType,
    qkv: DevPtr,
    inv_freq: DevPtr,
    pos0: DevPtr,
    s: RopeShape,
) -> Result<()> {
    rope(l, "rope_forward", dt, qkv, inv_freq, pos0, s)
}

/// The transposed rotation in place on the q and k heads of dqkv (`crate::ops::rope::backward`).
///
/// # Safety
/// As [`rope_forward`], for `dqkv`.
pub unsafe fn rope_backward(
    l: &dyn Launcher,
    dt: DType,
    dqkv: DevPtr,
    inv_freq: DevPtr,
    pos0: DevPtr,
    s: RopeShape,
) -> Result<()> {
    rope(l, "rope_backward", dt, dqkv, inv_freq, pos0, s)
}
