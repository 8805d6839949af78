//! Launchers of `kernels/encoder.cu`: `encoder_forward_*` and the deterministic embedding backward
//! `encoder_backward_wte_*` (one block per token bucket of an [`EncoderPlan`]), `encoder_backward_wpe_*`.

use super::geometry::{ENC_WTE_MAX_GRID, EW_BLOCK};
use super::{i32_of, k, Arg, DType, DevPtr, LaunchConfig, Launcher};
use anyhow::{ensure, Result};

/// out[B,T,C] = wte[tokens] + wpe[pos0[b] + t]; tokens [B*T] u32, pos0 [B] u32 (device).
///
/// # Safety
/// The [module contract](super) for `out` (`b * t * c` elements of `dt`), `tokens` (`b * t` u32, each
/// below wte's rows), `wte` (vocabulary x `c`), `wpe` (positions x `c`, covering every `pos0[b] + t`) and
/// `pos0` (`b` u32).
#[allow(clippy::too_many_arguments)]
pub unsafe fn encoder_forward(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    tokens: DevPtr,
    wte: DevPtr,
    wpe: DevPtr,
    pos0: DevPtr,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    i32_of(b * t * c, "B*T*C")?;
    l.launch(
        &k("encoder_forward", dt),
        LaunchConfig::linear(b * t * c, EW_BLOCK),
        &[
            Arg::Ptr(out),
            Arg::Ptr(tokens),
            Arg::Ptr(wte),
            Arg::Ptr(wpe),
            Arg::Ptr(pos0),
            Arg::I32(b as i32),
            Arg::I32(t as i32),
            Arg::I32(c as i32),
        ],
    )
}

/// The rows of a batch bucketed by token, for the deterministic embedding backward: `data` =
/// [start[U+1], token[U], rows[N]] (u32), each bucket's rows ascending. Built on the host from the batch's
/// token ids; upload `data` and pass it to [`encoder_backward`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderPlan {
    pub data: Vec<u32>,
    pub buckets: usize,
}

impl EncoderPlan {
    pub fn new(tokens: &[u32]) -> Self {
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by_key(|&i| (tokens[i as usize], i));
        let (mut start, mut token) = (Vec::new(), Vec::new());
        for (k, &i) in order.iter().enumerate() {
            let v = tokens[i as usize];
            if token.last() != Some(&v) {
                start.push(k as u32);
                token.push(v);
            }
        }
        start.push(order.len() as u32);
        let buckets = token.len();
        let mut data = start;
        data.extend(token);
        data.extend(order);
        EncoderPlan { data, buckets }
    }
}

/// dwte[V,C] += and, when given, dwpe[maxT,C] += (deterministic). `plan` is the device copy of
/// `EncoderPlan::new(tokens).data` with `buckets` buckets; `pos0_host` the host copy of the device `pos0`
/// (it fixes the range of positions to visit).
///
/// # Safety
/// The [module contract](super) for `dwte` (as `wte`), `dwpe` (as `wpe`, covering every
/// `pos0_host[b] + t`), `dout` (`B * t * c` elements of `dt`, B = `pos0_host.len()`), `plan` (the device copy
/// of an [`EncoderPlan`] of in-range token ids with `buckets` buckets) and `pos0` (device copy of `pos0_host`).
#[allow(clippy::too_many_arguments)]
pub unsafe fn encoder_backward(
    l: &dyn Launcher,
    dt: DType,
    dwte: DevPtr,
    dwpe: Option<DevPtr>,
    dout: DevPtr,
    plan: DevPtr,
    buckets: usize,
    pos0: DevPtr,
    pos0_host: &[u32],
    t: usize,
    c: usize,
) -> Result<()> {
    let b = pos0_host.len();
    let n = b * t;
    i32_of(n * c, "B*T*C")?;
    if n == 0 {
        return Ok(());
    }
    ensure!(buckets >= 1 && buckets <= n, "encoder_backward: {buckets} token buckets for {n} rows");
    l.launch(
        &k("encoder_backward_wte", dt),
        LaunchConfig {
            grid: [buckets.min(ENC_WTE_MAX_GRID as usize) as u32, 1, 1],
            block: [c.clamp(32, 256).next_multiple_of(32) as u32, 1, 1],
            smem: 0,
        },
        &[Arg::Ptr(dwte), Arg::Ptr(dout), Arg::Ptr(plan), Arg::I32(buckets as i32), Arg::I32(c as i32)],
    )?;
    let Some(dwpe) = dwpe else { return Ok(()) };
    let lo = *pos0_host.iter().min().unwrap() as usize;
    let hi = *pos0_host.iter().max().unwrap() as usize + t;
    let p = hi - lo;
    l.launch(
        &k("encoder_backward_wpe", dt),
        LaunchConfig::linear(p * c, EW_BLOCK),
        &[
            Arg::Ptr(dwpe),
            Arg::Ptr(dout),
            Arg::Ptr(pos0),
            Arg::I32(b as i32),
            Arg::I32(t as i32),
            Arg::I32(c as i32),
            Arg::I32(i32_of(lo, "pos0")?),
            Arg::I32(i32_of(p, "positions")?),
        ],
    )
}
