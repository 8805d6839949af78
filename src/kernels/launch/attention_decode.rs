//! Launcher of `kernels/attention_decode.cu`: `attention_decode_hs{1,2,4}_{f32,bf16}` (one query row per
//! (batch row, head) against a KV cache, its keys split among the [`DEC_WARPS`] warps of one block).

use super::attention::att_variant;
use super::geometry::DEC_WARPS;
use super::{i32_of, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::Result;

/// Causal attention forward for one query row per batch row (contract of `crate::ops::attention::forward`
/// with Tq = 1): NH query heads over NKV kv heads (NH % NKV == 0), out [B,1,C], lse f32 [B,NH,1], q_src [B,1,W],
/// kv [B,Tk,W] with W = C + 2 NKV HS, pos0 u32 [B] (device).
///
/// # Safety
/// The [module contract](super) for `out` (`b * c` elements of `dt`), `lse` (`b * nh` f32), `q_src`
/// (`b * w`), `kv` (`b * tk * w`, w = c + 2 nkv c / nh) and `pos0` (`b` u32).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_decode(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    lse: DevPtr,
    q_src: DevPtr,
    kv: DevPtr,
    pos0: DevPtr,
    b: usize,
    tk: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) -> Result<()> {
    let (hs, kpl, w) = att_variant(c, nh, nkv)?;
    i32_of(b * tk * w, "B*Tk*W")?;
    if b == 0 {
        return Ok(());
    }
    let warps = DEC_WARPS as usize;
    let smem_floats = hs + warps * 32 + warps * (hs + 2);
    l.launch(
        &format!("attention_decode_hs{kpl}_{}", dt.suffix()),
        LaunchConfig {
            grid: [nh as u32, i32_of(b, "B")? as u32, 1],
            block: [32 * DEC_WARPS, 1, 1],
            smem: (smem_floats * 4) as u32,
        },
        &[
            Arg::Ptr(out),
            Arg::Ptr(lse),
            Arg::Ptr(q_src),
            Arg::Ptr(kv),
            Arg::Ptr(pos0),
            Arg::I32(tk as i32),
            Arg::I32(nh as i32),
            Arg::I32(nkv as i32),
            Arg::I32(c as i32),
        ],
    )
}
