//! Launcher of `kernels/sample.cu`: `sample_{f32,bf16}` (one token per row of logits, the contract of
//! `crate::ops::sample`; one block of [`SAMPLE_BLOCK`] threads per row, each owning one chunk of the
//! reference's blocked sums).

use super::geometry::SAMPLE_BLOCK;
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use crate::ops::sample::{Sampling, CHUNKS};
use anyhow::{ensure, Result};

// The kernel's threads are the reference's chunks: the same blocked order of every sum.
const _: () = assert!(SAMPLE_BLOCK as usize == CHUNKS);

/// ids[rows] (u32) and logprobs[rows] (f32) from logits [rows, vp] (the first `v` columns valid) and one
/// uniform u[rows] (f64) per row; a non-finite logit at id i comes back as id v + i with that logit.
///
/// # Safety
/// The [module contract](super) for `logits` (`rows * vp` elements of `dt`), `u` (`rows` f64), `ids`
/// (`rows` u32) and `logprobs` (`rows` f32).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sample(
    l: &dyn Launcher,
    dt: DType,
    ids: DevPtr,
    logprobs: DevPtr,
    logits: DevPtr,
    u: DevPtr,
    rows: usize,
    v: usize,
    vp: usize,
    s: &Sampling,
) -> Result<()> {
    ensure!(v >= 1 && v <= vp, "sample: need 1 <= V ({v}) <= Vp ({vp})");
    i32_of(rows * vp, "rows*Vp")?;
    if rows == 0 {
        return Ok(());
    }
    l.launch(
        &k("sample", dt),
        LaunchConfig { grid: [i32_of(rows, "rows")? as u32, 1, 1], block: [SAMPLE_BLOCK, 1, 1], smem: 0 },
        &[
            Arg::Ptr(logits),
            Arg::Ptr(u),
            Arg::Ptr(ids),
            Arg::Ptr(logprobs),
            Arg::I32(v as i32),
            Arg::I32(vp as i32),
            Arg::F64(s.temperature),
            Arg::I32(i32_of(s.top_k.min(v), "top_k")?),
            Arg::F64(s.top_p),
        ],
    )
}
