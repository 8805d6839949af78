//! Launchers of `kernels/adamw.cu`: `adamw_multi_*` and the sum of squares `sum_squares_multi_partial_*`,
//! `sum_squares_final`, each over a host-built chunk table (one block per chunk of [`MULTI_CHUNK`] elements).

use super::geometry::{self, EW_BLOCK, SUMSQ_BLOCK};
use super::{k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{bail, ensure, Result};

// AdamW (contract of `crate::ops::adamw::step`) and the sum of squares behind gradient clipping, both over a
// whole tensor list in one launch: the host cuts the tensors into chunks listed in a table (one block each).

/// Elements per chunk of the multi-tensor kernels (one block each).
pub const MULTI_CHUNK: usize = geometry::MULTI_CHUNK as usize;

/// One row of the multi-tensor AdamW table (kernels/adamw.cu `AdamWChunk`): addresses offset to the chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamWChunk {
    pub param: u64,
    pub master: u64,
    pub grad: u64,
    pub m: u64,
    pub v: u64,
    pub len: i32,
    pub wd: f32,
}

/// One tensor of an AdamW step. For `DType::BF16`, `master` holds the f32 master weights and `param`
/// receives their bf16 rounding; for `DType::F32` the params are the master weights (master = 0).
#[derive(Clone, Copy, Debug)]
pub struct AdamWTensor {
    pub param: DevPtr,
    pub master: DevPtr,
    pub grad: DevPtr,
    pub m: DevPtr,
    pub v: DevPtr,
    pub n: usize,
    pub weight_decay: f64,
}

/// The chunk table of [`adamw_multi`] (upload it as bytes): parameters and gradients are `dt`, the rest f32.
pub fn adamw_chunks(dt: DType, tensors: &[AdamWTensor]) -> Result<Vec<AdamWChunk>> {
    let mut v = Vec::new();
    for t in tensors {
        if dt == DType::BF16 && t.master == 0 {
            bail!("adamw_bf16 needs f32 master weights");
        }
        for off in (0..t.n).step_by(MULTI_CHUNK) {
            let (o, of) = ((off * dt.size()) as u64, (off * 4) as u64);
            let master = if t.master == 0 { 0 } else { t.master + of };
            let len = MULTI_CHUNK.min(t.n - off) as i32;
            v.push(AdamWChunk {
                param: t.param + o,
                master,
                grad: t.grad + o,
                m: t.m + of,
                v: t.v + of,
                len,
                wd: t.weight_decay as f32,
            });
        }
    }
    Ok(v)
}

/// One AdamW step over every chunk of `table` (device copy of [`adamw_chunks`]) in one launch; `h`'s
/// weight decay is ignored (each chunk carries its tensor's).
///
/// # Safety
/// The [module contract](super) for `table` (`chunks` [`AdamWChunk`]s, as [`adamw_chunks`] makes them) and
/// for every address in the table (each chunk's `len` elements; params and grads of `dt`, the rest f32).
pub unsafe fn adamw_multi(
    l: &dyn Launcher,
    dt: DType,
    table: DevPtr,
    chunks: usize,
    h: &crate::ops::adamw::AdamWParams,
) -> Result<()> {
    ensure!(h.step >= 1, "adamw: step is 1-based");
    if chunks == 0 {
        return Ok(());
    }
    ensure!(chunks <= i32::MAX as usize, "adamw_multi: {chunks} chunks");
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2 = 1.0 - h.beta2.powi(h.step as i32);
    l.launch(
        &k("adamw_multi", dt),
        LaunchConfig { grid: [chunks as u32, 1, 1], block: [EW_BLOCK, 1, 1], smem: 0 },
        &[
            Arg::Ptr(table),
            Arg::F32(h.lr as f32),
            Arg::F32(h.beta1 as f32),
            Arg::F32(h.beta2 as f32),
            Arg::F32(h.eps as f32),
            Arg::F32(bc1 as f32),
            Arg::F32(bc2 as f32),
            Arg::F32(h.grad_scale as f32),
        ],
    )
}

/// One row of the multi-tensor sum-of-squares table (kernels/adamw.cu `SumSqChunk`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SumSqChunk {
    pub x: u64,
    pub len: i32,
    pub pad: i32,
}

/// The chunk table of [`sum_squares_multi`] for tensors (address, length) of type `dt`.
pub fn sum_squares_chunks(dt: DType, tensors: &[(DevPtr, usize)]) -> Vec<SumSqChunk> {
    let mut v = Vec::new();
    for &(x, n) in tensors {
        for off in (0..n).step_by(MULTI_CHUNK) {
            v.push(SumSqChunk { x: x + (off * dt.size()) as u64, len: MULTI_CHUNK.min(n - off) as i32, pad: 0 });
        }
    }
    v
}

/// f64 slots: result first, then one partial per chunk.
pub fn sum_squares_multi_scratch_bytes(chunks: usize) -> usize {
    (1 + chunks) * 8
}

/// Writes the sum of squares over every chunk of `table` as f64 at `scratch` (two launches, fixed order).
///
/// # Safety
/// The [module contract](super) for `table` (`chunks` [`SumSqChunk`]s, as [`sum_squares_chunks`] makes
/// them), every address in it (`len` elements of `dt`) and `scratch` ([`sum_squares_multi_scratch_bytes`]).
pub unsafe fn sum_squares_multi(
    l: &dyn Launcher,
    dt: DType,
    table: DevPtr,
    chunks: usize,
    scratch: DevPtr,
) -> Result<()> {
    ensure!(chunks <= i32::MAX as usize, "sum_squares_multi: {chunks} chunks");
    if chunks > 0 {
        l.launch(
            &k("sum_squares_multi_partial", dt),
            LaunchConfig { grid: [chunks as u32, 1, 1], block: [SUMSQ_BLOCK, 1, 1], smem: 0 },
            &[Arg::Ptr(scratch + 8), Arg::Ptr(table)],
        )?;
    }
    l.launch(
        "sum_squares_final",
        LaunchConfig { grid: [1, 1, 1], block: [SUMSQ_BLOCK, 1, 1], smem: 0 },
        &[Arg::Ptr(scratch), Arg::Ptr(scratch + 8), Arg::I32(chunks as i32)],
    )
}
