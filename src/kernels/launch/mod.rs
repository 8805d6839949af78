//! The one launch layer: every kernel's grid, block and shared-memory size is computed here, and launched
//! through a [`Launcher`] — the GPU (CUDA driver) or the CPU simulator — so the simulator tests exercise
//! exactly the configurations the GPU gets.
//!
//! Conventions: pointers are device addresses ([`DevPtr`]); element types follow [`DType`] (`T` below);
//! statistics, losses, weights, optimizer state and reduction partials are f32 (sum of squares: f64)
//! whatever `T` is. Ops that need temporary device memory take a `scratch` pointer whose size in bytes the
//! matching `*_scratch_bytes` function gives. Packed (16-byte) kernels require 16-byte-aligned pointers:
//! checked here.

use anyhow::{bail, ensure, Result};
use std::ffi::c_void;

/// A device address (a host address in the simulator).
pub type DevPtr = u64;

/// The storage type of a kernel instantiation; selects the `_f32` / `_bf16` entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
}

impl DType {
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 => 2,
        }
    }
    /// Elements per 16-byte pack.
    pub fn pack(self) -> usize {
        16 / self.size()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes. Above 48 KiB the device launcher must first raise the function's
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (the simulator accepts up to 227 KiB).
    pub smem: u32,
}

impl LaunchConfig {
    pub fn linear(n_threads: usize, block: u32) -> Self {
        let g = n_threads.div_ceil(block as usize).max(1);
        LaunchConfig { grid: [g as u32, 1, 1], block: [block, 1, 1], smem: 0 }
    }
}

/// One kernel parameter, passed by value like cuLaunchKernel's `kernelParams`.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(DevPtr),
    I32(i32),
    U32(u32),
    F32(f32),
}

impl Arg {
    /// Address of the parameter's value (what cuLaunchKernel and the simulator read).
    pub fn value_ptr(&self) -> *mut c_void {
        match self {
            Arg::Ptr(p) => p as *const u64 as *mut c_void,
            Arg::I32(v) => v as *const i32 as *mut c_void,
            Arg::U32(v) => v as *const u32 as *mut c_void,
            Arg::F32(v) => v as *const f32 as *mut c_void,
        }
    }
}

/// Runs a kernel by its `extern "C"` name.
pub trait Launcher {
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()>;
    fn name(&self) -> &'static str;
}

fn i32_of(n: usize, what: &str) -> Result<i32> {
    ensure!(n <= i32::MAX as usize, "{what} = {n} exceeds the kernels' 32-bit sizes");
    Ok(n as i32)
}

fn aligned16(ptrs: &[DevPtr], kernel: &str) -> Result<()> {
    for &p in ptrs {
        ensure!(p % 16 == 0, "{kernel}: pointer {p:#x} is not 16-byte aligned (packed loads)");
    }
    Ok(())
}

fn k(name: &str, dt: DType) -> String {
    format!("{name}_{}", dt.suffix())
}

const EW_BLOCK: u32 = 256;

/// Config of the packed elementwise kernels: one thread per 16-byte pack.
fn packed_cfg(n: usize, dt: DType) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(dt.pack()), EW_BLOCK)
}

// ------------------------------------------------------------------------------------------------ GELU
/// out[n] = gelu(inp[n]) (tanh form).
pub fn gelu_forward(l: &dyn Launcher, dt: DType, out: DevPtr, inp: DevPtr, n: usize) -> Result<()> {
    let name = k("gelu_forward", dt);
    aligned16(&[out, inp], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(out), Arg::Ptr(inp), Arg::I32(i32_of(n, "n")?)])
}

/// dinp[n] = gelu'(inp) * dout (overwrites).
pub fn gelu_backward(l: &dyn Launcher, dt: DType, dinp: DevPtr, inp: DevPtr, dout: DevPtr, n: usize) -> Result<()> {
    let name = k("gelu_backward", dt);
    aligned16(&[dinp, inp, dout], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(dinp), Arg::Ptr(inp), Arg::Ptr(dout), Arg::I32(i32_of(n, "n")?)])
}

// ------------------------------------------------------------------------------------------------ residual
/// out = a + b.
pub fn add(l: &dyn Launcher, dt: DType, out: DevPtr, a: DevPtr, b: DevPtr, n: usize) -> Result<()> {
    let name = k("add", dt);
    aligned16(&[out, a, b], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(out), Arg::Ptr(a), Arg::Ptr(b), Arg::I32(i32_of(n, "n")?)])
}

/// dst += src.
pub fn accumulate(l: &dyn Launcher, dt: DType, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    let name = k("accumulate", dt);
    aligned16(&[dst, src], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)])
}

/// buf *= s.
pub fn scale(l: &dyn Launcher, dt: DType, buf: DevPtr, s: f32, n: usize) -> Result<()> {
    let name = k("scale", dt);
    aligned16(&[buf], &name)?;
    l.launch(&name, packed_cfg(n, dt), &[Arg::Ptr(buf), Arg::F32(s), Arg::I32(i32_of(n, "n")?)])
}

/// dst (bf16) = round-to-nearest-even(src (f32)).
pub fn cast_f32_to_bf16(l: &dyn Launcher, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    l.launch(
        "cast_f32_to_bf16",
        LaunchConfig::linear(n, EW_BLOCK),
        &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)],
    )
}

/// dst (f32) = src (bf16).
pub fn cast_bf16_to_f32(l: &dyn Launcher, dst: DevPtr, src: DevPtr, n: usize) -> Result<()> {
    l.launch(
        "cast_bf16_to_f32",
        LaunchConfig::linear(n, EW_BLOCK),
        &[Arg::Ptr(dst), Arg::Ptr(src), Arg::I32(i32_of(n, "n")?)],
    )
}

// ------------------------------------------------------------------------------------------------ column sums
/// Rows per partial of the deterministic column sums (bias and layernorm parameter gradients).
const COLSUM_ROWS: usize = 256;

fn colsum_chunks(n: usize) -> usize {
    n.div_ceil(COLSUM_ROWS).max(1)
}

fn colsum_partial_cfg(n: usize, c: usize) -> LaunchConfig {
    LaunchConfig { grid: [c.div_ceil(32) as u32, colsum_chunks(n) as u32, 1], block: [32, 8, 1], smem: 0 }
}

fn colsum_finalize(
    l: &dyn Launcher,
    dt: DType,
    dst0: DevPtr,
    dst1: DevPtr,
    partial: DevPtr,
    r: usize,
    c: usize,
) -> Result<()> {
    l.launch(
        &k("colsum_finalize", dt),
        LaunchConfig::linear(c, EW_BLOCK),
        &[Arg::Ptr(dst0), Arg::Ptr(dst1), Arg::Ptr(partial), Arg::I32(i32_of(r, "chunks")?), Arg::I32(i32_of(c, "C")?)],
    )
}

// ------------------------------------------------------------------------------------------------ linear
/// out[N,OC] += bias[OC].
pub fn bias_add(l: &dyn Launcher, dt: DType, out: DevPtr, bias: DevPtr, n: usize, oc: usize) -> Result<()> {
    i32_of(n * oc, "N*OC")?;
    l.launch(
        &k("bias_add", dt),
        LaunchConfig::linear(n * oc, EW_BLOCK),
        &[Arg::Ptr(out), Arg::Ptr(bias), Arg::I32(n as i32), Arg::I32(oc as i32)],
    )
}

pub fn bias_backward_scratch_bytes(n: usize, oc: usize) -> usize {
    colsum_chunks(n) * oc * 4
}

/// dbias[OC] += column sums of dout[N,OC] (deterministic: fixed-order partials, no atomics).
pub fn bias_backward(
    l: &dyn Launcher,
    dt: DType,
    dbias: DevPtr,
    dout: DevPtr,
    n: usize,
    oc: usize,
    scratch: DevPtr,
) -> Result<()> {
    i32_of(n * oc, "N*OC")?;
    l.launch(
        &k("bias_backward_partial", dt),
        colsum_partial_cfg(n, oc),
        &[Arg::Ptr(scratch), Arg::Ptr(dout), Arg::I32(n as i32), Arg::I32(oc as i32), Arg::I32(COLSUM_ROWS as i32)],
    )?;
    colsum_finalize(l, dt, dbias, 0, scratch, colsum_chunks(n), oc)
}

// ------------------------------------------------------------------------------------------------ layernorm
const LN_BLOCK: u32 = 256; // one warp per row

/// The layernorm kernels read rows in 16-byte packs when C is a multiple of the pack (kernels/layernorm.cu):
/// their row pointers must then be 16-byte aligned.
fn ln_aligned(dt: DType, c: usize, ptrs: &[DevPtr], kernel: &str) -> Result<()> {
    if c.is_multiple_of(dt.pack()) {
        aligned16(&ptrs.iter().copied().filter(|&p| p != 0).collect::<Vec<_>>(), kernel)?;
    }
    Ok(())
}

/// out[N,C] = layernorm(inp) * w + b; mean, rstd: f32 [N] (either may be 0 = not stored).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    l: &dyn Launcher,
    dt: DType,
    out: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    b: DevPtr,
    n: usize,
    c: usize,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[out, inp, w, b], "layernorm_forward")?;
    l.launch(
        &k("layernorm_forward", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(out),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(inp),
            Arg::Ptr(w),
            Arg::Ptr(b),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ],
    )
}

/// residual[N,C] = a + b, then out = layernorm(residual) * w + bias with the stored residual's statistics
/// (mean, rstd f32 [N], either may be 0): `add` and `layernorm_forward` in one pass.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward(
    l: &dyn Launcher,
    dt: DType,
    residual: DevPtr,
    out: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    a: DevPtr,
    b: DevPtr,
    w: DevPtr,
    bias: DevPtr,
    n: usize,
    c: usize,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[residual, out, a, b, w, bias], "residual_layernorm_forward")?;
    l.launch(
        &k("residual_layernorm_forward", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(residual),
            Arg::Ptr(out),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(a),
            Arg::Ptr(b),
            Arg::Ptr(w),
            Arg::Ptr(bias),
            Arg::I32(n as i32),
            Arg::I32(c as i32),
        ],
    )
}

pub fn layernorm_backward_scratch_bytes(n: usize, c: usize) -> usize {
    2 * colsum_chunks(n) * c * 4
}

/// dinp[N,C] += ..., dw[C] += ..., db[C] += ... (see kernels/layernorm.cu); mean, rstd f32 from the forward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    l: &dyn Launcher,
    dt: DType,
    dinp: DevPtr,
    dw: DevPtr,
    db: DevPtr,
    dout: DevPtr,
    inp: DevPtr,
    w: DevPtr,
    mean: DevPtr,
    rstd: DevPtr,
    n: usize,
    c: usize,
    scratch: DevPtr,
) -> Result<()> {
    i32_of(n * c, "N*C")?;
    ln_aligned(dt, c, &[dinp, dout, inp, w], "layernorm_backward")?;
    let (ni, ci) = (n as i32, c as i32);
    l.launch(
        &k("layernorm_backward_dinp", dt),
        LaunchConfig::linear(n * 32, LN_BLOCK),
        &[
            Arg::Ptr(dinp),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(w),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::I32(ni),
            Arg::I32(ci),
        ],
    )?;
    l.launch(
        &k("layernorm_backward_partial", dt),
        colsum_partial_cfg(n, c),
        &[
            Arg::Ptr(scratch),
            Arg::Ptr(dout),
            Arg::Ptr(inp),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::I32(ni),
            Arg::I32(ci),
            Arg::I32(COLSUM_ROWS as i32),
        ],
    )?;
    colsum_finalize(l, dt, dw, db, scratch, colsum_chunks(n), c)
}

// ------------------------------------------------------------------------------------------------ encoder
/// out[B,T,C] = wte[tokens] + wpe[pos0[b] + t]; tokens [B*T] u32, pos0 [B] u32 (device).
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(
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

const ENC_WTE_MAX_GRID: usize = 65535;

/// dwte[V,C] += and dwpe[maxT,C] += (deterministic). `plan` is the device copy of
/// `EncoderPlan::new(tokens).data` with `buckets` buckets; `pos0_host` the host copy of the device `pos0`
/// (it fixes the range of positions to visit).
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    l: &dyn Launcher,
    dt: DType,
    dwte: DevPtr,
    dwpe: DevPtr,
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
            grid: [buckets.min(ENC_WTE_MAX_GRID) as u32, 1, 1],
            block: [c.clamp(32, 256).next_multiple_of(32) as u32, 1, 1],
            smem: 0,
        },
        &[Arg::Ptr(dwte), Arg::Ptr(dout), Arg::Ptr(plan), Arg::I32(buckets as i32), Arg::I32(c as i32)],
    )?;
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

// ------------------------------------------------------------------------------------------------ cross-entropy
/// losses[N] (f32) and, with want_grad, logits[N,Vp] overwritten by dlogits (see kernels/crossentropy.cu).
/// targets [N] u32, weights [N] f32.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy(
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
        LaunchConfig { grid: [n as u32, 1, 1], block: [256, 1, 1], smem: 0 },
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

// ------------------------------------------------------------------------------------------------ entropy
/// ent[N] (f32) and, with want_grad, dlogits[N,Vp] = coef-weighted dH/dlogits (see kernels/entropy.cu);
/// coef [N] f32. Without want_grad `dlogits` may be 0.
#[allow(clippy::too_many_arguments)]
pub fn entropy(
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
        LaunchConfig { grid: [n as u32, 1, 1], block: [256, 1, 1], smem: 0 },
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

// ------------------------------------------------------------------------------------------------ AdamW, norm
// AdamW (contract of `crate::ops::adamw::step`) and the sum of squares behind gradient clipping, both over a
// whole tensor list in one launch: the host cuts the tensors into chunks listed in a table (one block each).

/// Elements per chunk of the multi-tensor kernels (one block each).
pub const MULTI_CHUNK: usize = 1 << 16;
const SUMSQ_BLOCK: u32 = 256;

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
pub fn adamw_multi(
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
pub fn sum_squares_multi(l: &dyn Launcher, dt: DType, table: DevPtr, chunks: usize, scratch: DevPtr) -> Result<()> {
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

// ------------------------------------------------------------------------------------------------ attention
const ATT_WARPS: usize = 4; // kernels/attention.cu ATT_WARPS: one warp per row

/// The kernel variant for head size `hs`: lanes own hs/32 (rounded up to 1, 2, 4) dims each.
fn att_variant(c: usize, nh: usize) -> Result<(usize, u32)> {
    ensure!(nh > 0 && c.is_multiple_of(nh), "attention: C ({c}) must be a multiple of NH ({nh})");
    let hs = c / nh;
    let kpl = match hs {
        1..=32 => 1,
        33..=64 => 2,
        65..=128 => 4,
        _ => bail!("attention: head size {hs} not supported by the kernels (max 128)"),
    };
    Ok((hs, kpl))
}

fn att_cfg(rows: usize, nh: usize, b: usize, smem_floats_per_warp: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [rows.div_ceil(ATT_WARPS) as u32, nh as u32, b as u32],
        block: [32 * ATT_WARPS as u32, 1, 1],
        smem: (ATT_WARPS * smem_floats_per_warp * 4) as u32,
    }
}

/// Which attention kernels to run (forward, backward).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionImpl {
    /// Tensor cores (WMMA) where available (bf16, head size 64), else CUDA cores.
    Auto,
    /// CUDA cores (any dtype, head size <= 128).
    Simt,
    /// Tensor cores: bf16, head size 64 only.
    Wmma,
}

/// Dynamic shared memory of attention_forward_wmma_bf16 (kernels/attention.cu WA_SMEM).
pub const ATTENTION_WMMA_SMEM: u32 = 72448;

/// Causal attention forward (contract of `crate::ops::attention::forward`): out [B,Tq,C], lse f32 [B,NH,Tq],
/// q_src [B,Tq,3C], kv [B,Tk,3C], pos0 u32 [B] (device).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
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
) -> Result<()> {
    attention_forward_with(l, AttentionImpl::Auto, dt, out, lse, q_src, kv, pos0, b, tq, tk, c, nh)
}

/// [`attention_forward`] with an explicit kernel choice.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_with(
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
) -> Result<()> {
    let (hs, kpl) = att_variant(c, nh)?;
    i32_of(b * tq.max(tk) * 3 * c, "B*T*3C")?;
    if b == 0 || tq == 0 {
        return Ok(());
    }
    let wmma_ok = dt == DType::BF16 && hs == 64;
    let use_wmma = match imp {
        AttentionImpl::Auto => wmma_ok,
        AttentionImpl::Simt => false,
        AttentionImpl::Wmma => {
            ensure!(wmma_ok, "attention_forward_wmma needs bf16 and head size 64 (got {dt:?}, {hs})");
            true
        }
    };
    if use_wmma {
        return l.launch(
            "attention_forward_wmma_bf16",
            LaunchConfig {
                grid: [tq.div_ceil(64) as u32, nh as u32, b as u32],
                block: [128, 1, 1],
                smem: ATTENTION_WMMA_SMEM,
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
            Arg::I32(c as i32),
        ],
    )
}

/// f32 D = dout . out per (b, h, t).
pub fn attention_backward_scratch_bytes(b: usize, t: usize, nh: usize) -> usize {
    b * nh * t * 4
}

/// Dynamic shared memory of attention_backward_dq_wmma_bf16 / attention_backward_dkv_wmma_bf16
/// (kernels/attention.cu WBQ_SMEM, WBK_SMEM).
pub const ATTENTION_BWD_DQ_WMMA_SMEM: u32 = 81408;
pub const ATTENTION_BWD_DKV_WMMA_SMEM: u32 = 90112;

/// Causal attention backward, training form (contract of `crate::ops::attention::backward`): dqkv [B,T,3C]
/// is overwritten; lse f32 from the forward.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
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
    scratch: DevPtr,
) -> Result<()> {
    attention_backward_with(l, AttentionImpl::Auto, dt, dqkv, dout, qkv, out, lse, b, t, c, nh, scratch)
}

/// [`attention_backward`] with an explicit kernel choice. The tensor-core pair reads 16-byte packs, so it
/// also needs 16-byte-aligned dqkv, dout, qkv, out (Auto falls back to CUDA cores otherwise).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
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
    scratch: DevPtr,
) -> Result<()> {
    let (hs, kpl) = att_variant(c, nh)?;
    i32_of(b * t * 3 * c, "B*T*3C")?;
    if b == 0 || t == 0 {
        return Ok(());
    }
    let (ti, nhi, ci) = (t as i32, nh as i32, c as i32);
    let wmma_ok = dt == DType::BF16 && hs == 64;
    let aligned = [dqkv, dout, qkv, out].iter().all(|p| p % 16 == 0);
    let use_wmma = match imp {
        AttentionImpl::Auto => wmma_ok && aligned,
        AttentionImpl::Simt => false,
        AttentionImpl::Wmma => {
            ensure!(wmma_ok, "attention_backward_wmma needs bf16 and head size 64 (got {dt:?}, {hs})");
            aligned16(&[dqkv, dout, qkv, out], "attention_backward_wmma")?;
            true
        }
    };
    let (dq_name, dkv_name, dq_cfg, dkv_cfg) = if use_wmma {
        let grid = [t.div_ceil(64) as u32, nh as u32, b as u32];
        (
            "attention_backward_dq_wmma_bf16".to_string(),
            "attention_backward_dkv_wmma_bf16".to_string(),
            LaunchConfig { grid, block: [128, 1, 1], smem: ATTENTION_BWD_DQ_WMMA_SMEM },
            LaunchConfig { grid, block: [128, 1, 1], smem: ATTENTION_BWD_DKV_WMMA_SMEM },
        )
    } else {
        (
            format!("attention_backward_dq_hs{kpl}_{}", dt.suffix()),
            format!("attention_backward_dkv_hs{kpl}_{}", dt.suffix()),
            att_cfg(t, nh, b, 2 * hs + 32),
            att_cfg(t, nh, b, 2 * hs + 64),
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
            Arg::I32(ci),
        ],
    )
}

// ------------------------------------------------------------------------------------------------ attention, unfused reference (benchmarks only)
const SMX_WARPS: usize = 8; // kernels/attention_unfused.cu SMX_WARPS: one warp per row

/// q, k, v [B,NH,T,HS] from qkv [B,T,3C], C = NH*HS (see kernels/attention_unfused.cu).
#[allow(clippy::too_many_arguments)]
pub fn attention_permute(
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
        &self::k("attention_permute", dt), // the parameter `k` shadows the name helper
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
#[allow(clippy::too_many_arguments)]
pub fn attention_unpermute(
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
pub fn softmax_causal(
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
            grid: [(bh * t).div_ceil(SMX_WARPS) as u32, 1, 1],
            block: [32 * SMX_WARPS as u32, 1, 1],
            smem: 0,
        },
        &[Arg::Ptr(p), Arg::Ptr(s), Arg::I32(bh as i32), Arg::I32(t as i32), Arg::F32(scale)],
    )
}
