//! Launchers of `kernels/attention_unfused.cu` (the unfused reference route, benchmarks only):
//! `attention_permute_*`, `attention_unpermute_*`, `softmax_causal_*` ([`SMX_WARPS`] rows per block).

use super::geometry::{EW_BLOCK, SMX_WARPS};
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// q, k, v [B,NH,T,HS] from qkv [B,T,3C], C = NH*HS (see kernels/attention_unfused.cu).
///
/// # Safety
/// The [module contract](super) for `q`, `k`, `v` (`b * nh * t * hs` elements of `dt` each) and `qkv`
/// (three times that).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_permute(
    l: &dyn Launcher,
    dt: DType,
    q: DevPtr,
    k: DevPtr,
    v: DevPtr,
    qkv: DevPtr,
    b: usize,
    t: usize,
    nh: usize,
    hs: usize,
) -> Result<()> {
    let n = b * nh * t * hs;
    i32_of(3 * n, "B*T*3C")?;
    if n == 0 {
        return Ok(());
    }
    l.launch(
        &super::k("attention_permute", dt), // the parameter `k` shadows the name helper
        LaunchConfig::linear(n, EW_BLOCK),
        &[
            Arg::Ptr(q),
            Arg::Ptr(k),
            Arg::Ptr(v),
            Arg::Ptr(qkv),
            Arg::I32(b as i32),
            Arg::I32(t as i32),
            Arg::I32(nh as i32),
            Arg::I32(hs as i32),
        ],
    )
}

/// out [B,T,C] from y [B,NH,T,HS], C = NH*HS.
///
/// # Safety
/// The [module contract](super) for `out` and `y` (`b * t * nh * hs` elements of `dt` each).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_unpermute(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    y: DevPtr,
    b: usize,
    t: usize,
    nh: usize,
    hs: usize,
) -> Result<()> {
    let n = b * t * nh * hs;
    i32_of(n, "B*T*C")?;
    if n == 0 {
        return Ok(());
    }
    l.launch(
        &k("attention_unpermute", dt),
        LaunchConfig::linear(n, EW_BLOCK),
        &[Arg::Ptr(out), Arg::Ptr(y), Arg::I32(b as i32), Arg::I32(t as i32), Arg::I32(nh as i32), Arg::I32(hs as i32)],
    )
}

/// p [BH,T,T] = causal softmax of scale * s [BH,T,T] along each row (row i sees columns 0..=i; exact zeros
/// above the diagonal, which is never read). p == s (in place) is allowed.
///
/// # Safety
/// The [module contract](super) for `p` and `s` (`bh * t * t` elements of `dt` each; they may be equal).
pub unsafe fn softmax_causal(
    l: &dyn Launcher,
    dt: DType,
    p: DevPtr,
    s: DevPtr,
    bh: usize,
    t: usize,
    scale: f32,
) -> Result<()> {
    i32_of(bh * t * t, "BH*T*T")?;
    if bh == 0 || t == 0 {
        return Ok(());
    }
    l.launch(
        &k("softmax_causal", dt),
        LaunchConfig {
            grid: [(bh * t).div_ceil(SMX_WARPS as usize) as u32, 1, 1],
            block: [32 * SMX_WARPS, 1, 1],
            smem: 0,
        },
        &[Arg::Ptr(p), Arg::Ptr(s), Arg::I32(bh as i32), Arg::I32(t as i32), Arg::F32(scale)],
    )
}
