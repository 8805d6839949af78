//! Launchers of `kernels/attention.cu`: the fused causal grouped-query attention on CUDA cores
//! (`attention_forward_hs{1,2,4}_*`, `attention_backward_dq_hs*_*`, `attention_backward_dkv_hs*_*`, one warp per
//! row, [`ATT_WARPS`] per block) and on tensor cores for bf16 / head size 64 (`attention_forward_mma_bf16`,
//! `attention_backward_dq_wmma_bf16`, `attention_backward_dkv_wmma_bf16`; tiles and shared memory from
//! [`super::geometry`]).

use super::geometry::{ATT_WARPS, WA_Q, WA_SMEM, WA_WARPS, WBK_SMEM, WBQ_SMEM, WB_T};
use super::{aligned16, i32_of, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{bail, ensure, Result};

/// (head size HS, kernel variant, qkv row width W = C + 2 NKV HS) of C channels in NH query heads and NKV kv
/// heads; the variant: lanes own HS/32 (rounded up to 1, 2, 4) dims each.
pub(super) fn att_variant(c: usize, nh: usize, nkv: usize) -> Result<(usize, u32, usize)> {
    ensure!(nh > 0 && c.is_multiple_of(nh), "attention: C ({c}) must be a multiple of NH ({nh})");
    ensure!(nkv > 0 && nh.is_multiple_of(nkv), "attention: NH ({nh}) must be a multiple of NKV ({nkv})");
    let hs = c / nh;
    let kpl = match hs {
        1..=32 => 1,
        33..=64 => 2,
        65..=128 => 4,
        _ => bail!("attention: head size {hs} not supported by the kernels (max 128)"),
    };
    Ok((hs, kpl, c + 2 * nkv * hs))
}

fn att_cfg(rows: usize, heads: usize, b: usize, smem_floats_per_warp: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [rows.div_ceil(ATT_WARPS as usize) as u32, heads as u32, b as u32],
        block: [32 * ATT_WARPS, 1, 1],
        smem: (ATT_WARPS as usize * smem_floats_per_warp * 4) as u32,
    }
}

/// Which attention kernels to run (forward, backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionImpl {
    /// Tensor cores where available (bf16, head size 64, 16-byte aligned rows), else CUDA cores.
    Auto,
    /// CUDA cores (any dtype, head size <= 128).
    Simt,
    /// Tensor cores (forward mma.sync, backward WMMA): bf16, head size 64 only.
    TensorCores,
}

/// Dynamic shared memory of attention_forward_mma_bf16 ([`WA_SMEM`]).
pub const ATTENTION_MMA_SMEM: u32 = WA_SMEM;

/// Causal attention forward (contract of `crate::ops::attention::forward`): NH query heads over NKV kv heads
/// (NH % NKV == 0), out [B,Tq,C], lse f32 [B,NH,Tq], q_src [B,Tq,W], kv [B,Tk,W] with W = C + 2 NKV HS,
/// pos0 u32 [B] (device).
///
/// # Safety
/// As [`attention_forward_with`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_forward(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    lse: DevPtr,
    q_src: DevPtr,
    kv: DevPtr,
    pos0: DevPtr,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) -> Result<()> {
    attention_forward_with(l, AttentionImpl::Auto, dt, out, lse, q_src, kv, pos0, b, tq, tk, c, nh, nkv)
}

/// [`attention_forward`] with an explicit kernel choice.
///
/// # Safety
/// The [module contract](super) for `out` (`b * tq * c` elements of `dt`), `lse` (`b * nh * tq` f32),
/// `q_src` (`b * tq * w`), `kv` (`b * tk * w`, w = c + 2 nkv c / nh) and `pos0` (`b` u32).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_forward_with(
    l: &dyn Launcher,
    imp: AttentionImpl,
    dt: DType,
    out: DevPtr,
    lse: DevPtr,
    q_src: DevPtr,
    kv: DevPtr,
    pos0: DevPtr,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    nkv: usize,
) -> Result<()> {
    let (hs, kpl, w) = att_variant(c, nh, nkv)?;
    i32_of(b * tq.max(tk) * w, "B*T*W")?;
    if b == 0 || tq == 0 {
        return Ok(());
    }
    let tc_ok = dt == DType::BF16 && hs == 64;
    // The tiles are staged in 16-byte packs (the rows of q_src and kv are then aligned: W is a multiple of 64).
    let aligned = [q_src, kv].iter().all(|p| p % 16 == 0);
    let use_tc = match imp {
        AttentionImpl::Auto => tc_ok && aligned,
        AttentionImpl::Simt => false,
        AttentionImpl::TensorCores => {
            ensure!(tc_ok, "attention_forward_mma needs bf16 and head size 64 (got {dt:?}, {hs})");
            aligned16(&[q_src, kv], "attention_forward_mma")?;
            true
        }
    };
    if use_tc {
        return l.launch(
            "attention_forward_mma_bf16",
            LaunchConfig {
                grid: [tq.div_ceil(WA_Q as usize) as u32, nh as u32, b as u32],
                block: [32 * WA_WARPS, 1, 1],
                smem: ATTENTION_MMA_SMEM,
            },
            &[
                Arg::Ptr(out),
                Arg::Ptr(lse),
                Arg::Ptr(q_src),
                Arg::Ptr(kv),
                Arg::Ptr(pos0),
                Arg::I32(tq as i32),
                Arg::I32(tk as i32),
                Arg::I32(nh as i32),
                Arg::I32(nkv as i32),
                Arg::I32(c as i32),
            ],
        );
    }
    l.launch(
        &format!("attention_forward_hs{kpl}_{}", dt.suffix()),
        att_cfg(tq, nh, b, hs + 32),
        &[
            Arg::Ptr(out),
            Arg::Ptr(lse),
            Arg::Ptr(q_src),
            Arg::Ptr(kv),
            Arg::Ptr(pos0),
            Arg::I32(tq as i32),
            Arg::I32(tk as i32),
            Arg::I32(nh as i32),
            Arg::I32(nkv as i32),
            Arg::I32(c as i32),
        ],
    )
}

/// f32 D = dout . out per (b, h, t).
pub fn attention_backward_scratch_bytes(b: usize, t: usize, nh: usize) -> usize {
    b * nh * t * 4
}

/// Dynamic shared memory of attention_backward_dq_wmma_bf16 / attention_backward_dkv_wmma_bf16
/// ([`WBQ_SMEM`], [`WBK_SMEM`]).
pub const ATTENTION_BWD_DQ_WMMA_SMEM: u32 = WBQ_SMEM;
pub const ATTENTION_BWD_DKV_WMMA_SMEM: u32 = WBK_SMEM;

/// Causal attention backward, training form (contract of `crate::ops::attention::backward`): dqkv [B,T,W]
/// (W = C + 2 NKV HS) is overwritten, dk and dv of a kv head summed over its NH / NKV query heads in order (no
/// atomics: deterministic); lse f32 from the forward.
///
/// # Safety
/// As [`attention_backward_with`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_backward(
    l: &dyn Launcher,
    dt: DType,
    dqkv: DevPtr,
    dout: DevPtr,
    qkv: DevPtr,
    out: DevPtr,
    lse: DevPtr,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    nkv: usize,
    scratch: DevPtr,
) -> Result<()> {
    attention_backward_with(l, AttentionImpl::Auto, dt, dqkv, dout, qkv, out, lse, b, t, c, nh, nkv, scratch)
}

/// [`attention_backward`] with an explicit kernel choice. The tensor-core pair reads 16-byte packs, so it
/// also needs 16-byte-aligned dqkv, dout, qkv, out (Auto falls back to CUDA cores otherwise).
///
/// # Safety
/// The [module contract](super) for `dqkv`, `qkv` (`b * t * w` elements of `dt`, w = c + 2 nkv c / nh), `dout`, `out`
/// (`b * t * c`), `lse` (`b * nh * t` f32) and `scratch` ([`attention_backward_scratch_bytes`] bytes).
#[allow(clippy::too_many_arguments)]
pub unsafe fn attention_backward_with(
    l: &dyn Launcher,
    imp: AttentionImpl,
    dt: DType,
    dqkv: DevPtr,
    dout: DevPtr,
    qkv: DevPtr,
    out: DevPtr,
    lse: DevPtr,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    nkv: usize,
    scratch: DevPtr,
) -> Result<()> {
    let (hs, kpl, w) = att_variant(c, nh, nkv)?;
    i32_of(b * t * w, "B*T*W")?;
    if b == 0 || t == 0 {
        return Ok(());
    }
    let (ti, nhi, nkvi, ci) = (t as i32, nh as i32, nkv as i32, c as i32);
    let wmma_ok = dt == DType::BF16 && hs == 64;
    let aligned = [dqkv, dout, qkv, out].iter().all(|p| p % 16 == 0);
    let use_wmma = match imp {
        AttentionImpl::Auto => wmma_ok && aligned,
        AttentionImpl::Simt => false,
        AttentionImpl::TensorCores => {
            ensure!(wmma_ok, "attention_backward_wmma needs bf16 and head size 64 (got {dt:?}, {hs})");
            aligned16(&[dqkv, dout, qkv, out], "attention_backward_wmma")?;
            true
        }
    };
    // dq: a block per (row tile, query head); dkv: per (row tile, kv head).
    let (dq_name, dkv_name, dq_cfg, dkv_cfg) = if use_wmma {
        let tiles = t.div_ceil(WB_T as usize) as u32;
        let block = [32 * WA_WARPS, 1, 1];
        (
            "attention_backward_dq_wmma_bf16".to_string(),
            "attention_backward_dkv_wmma_bf16".to_string(),
            LaunchConfig { grid: [tiles, nh as u32, b as u32], block, smem: ATTENTION_BWD_DQ_WMMA_SMEM },
            LaunchConfig { grid: [tiles, nkv as u32, b as u32], block, smem: ATTENTION_BWD_DKV_WMMA_SMEM },
        )
    } else {
        (
            format!("attention_backward_dq_hs{kpl}_{}", dt.suffix()),
            format!("attention_backward_dkv_hs{kpl}_{}", dt.suffix()),
            att_cfg(t, nh, b, 2 * hs + 32),
            att_cfg(t, nkv, b, 2 * hs + 64),
        )
    };
    l.launch(
        &dq_name,
        dq_cfg,
        &[
            Arg::Ptr(dqkv),
            Arg::Ptr(scratch),
            Arg::Ptr(dout),
            Arg::Ptr(qkv),
            Arg::Ptr(out),
            Arg::Ptr(lse),
            Arg::I32(ti),
            Arg::I32(nhi),
            Arg::I32(nkvi),
            Arg::I32(ci),
        ],
    )?;
    l.launch(
        &dkv_name,
        dkv_cfg,
        &[
            Arg::Ptr(dqkv),
            Arg::Ptr(scratch),
            Arg::Ptr(dout),
            Arg::Ptr(qkv),
            Arg::Ptr(lse),
            Arg::I32(ti),
            Arg::I32(nhi),
            Arg::I32(nkvi),
            Arg::I32(ci),
        ],
    )
}
