//! The engine's [`Backend`] on the CUDA kernels, written once over a [`Device`]: the GPU
//! ([`CudaBackend`]) or the CPU simulator ([`SimBackend`], where CI runs the very same code).
//!
//! Two precisions ([`KernelBackend::compute`]):
//! - `DType::F32`: every buffer f32, matrix products in true f32. The tight check against the CPU engine.
//! - `DType::BF16`, mixed precision: activations, their gradients and the parameter gradients are bf16
//!   (`zeros` allocates bf16); matrix products take bf16 inputs on the tensor cores with f32 accumulation;
//!   logits (the LM head writes them in f32 from bf16 inputs), layernorm statistics, attention logsumexps,
//!   losses, loss weights and the AdamW moments are f32; every
//!   kernel computes in f32 registers. Parameters stay f32 master weights (what `upload` makes) with a bf16
//!   working copy that the forward and backward read and AdamW rewrites (`adamw_bf16` rounds the updated
//!   master).
//!
//! A buffer carries its storage type. An op runs its kernel in the type of the buffer it writes; inputs
//! of another type are read through a converted view (an f32 buffer's bf16 copy is made once and kept
//! until the buffer is next written). Outputs that are statistics are always f32, so no f32 value is
//! silently narrowed.
//!
//! Safety: the launch functions and device copies are `unsafe` (kernels dereference raw device pointers);
//! the [`Backend`] methods here stay safe because every pointer they pass comes from a live buffer of this
//! backend ([`DevBuf`], [`DevIds`], a scratch or cached upload) and every size a kernel will access is
//! checked against those buffers first (`need` and the index checks), panicking like the CPU engine's
//! slice indexing where a caller passes inconsistent shapes.

use super::cuda_device::CudaDevice;
use super::device::{Device, Gemm, SimDevice};
use super::launch::{self as kl, DType, DevPtr};
use crate::backend::Backend;
use crate::ops::adamw::AdamWParams;
use crate::ops::rope::Rope;
use crate::ops::sample::Sampling;
use anyhow::Result;
use half::bf16;
use std::sync::{Mutex, OnceLock};

pub struct KernelBackend<D: Device> {
    pub dev: D,
    /// Storage type of new buffers and input type of matrix products (see the module docs).
    pub compute: DType,
    /// Device copies of recently used small host arrays (`pos0`, the multi-tensor tables): uploading them on
    /// every op would stall the stream.
    consts: Mutex<Vec<(Vec<u8>, D::Mem)>>,
}

const CONSTS_KEPT: usize = 16;

/// The kernels in the CPU simulator.
pub type SimBackend = KernelBackend<SimDevice>;
/// The kernels on an NVIDIA GPU.
pub type CudaBackend = KernelBackend<CudaDevice>;

impl SimBackend {
    /// f32 throughout.
    pub fn new() -> Self {
        KernelBackend::with_device(SimDevice::default(), DType::F32)
    }
    /// Mixed precision (bf16 compute, f32 master weights).
    pub fn mixed() -> Self {
        KernelBackend::with_device(SimDevice::default(), DType::BF16)
    }
}

impl Default for SimBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CudaBackend {
    /// GPU `ordinal` computing in `compute`; an error where no GPU is usable.
    pub fn cuda(ordinal: usize, compute: DType) -> Result<Self> {
        Ok(KernelBackend::with_device(CudaDevice::new(ordinal)?, compute))
    }
}

/// A device buffer of `n` elements stored as `dt`; an f32 buffer may hold its bf16 copy in `half`.
pub struct DevBuf<M> {
    n: usize,
    dt: DType,
    mem: M,
    half: OnceLock<M>,
}

impl<M> DevBuf<M> {
    pub fn dtype(&self) -> DType {
        self.dt
    }
}

/// Token ids on the device, with the host copy the embedding backward buckets by token.
pub struct DevIds<M> {
    mem: M,
    host: Vec<u32>,
}

/// An input as the kernel reads it: the buffer itself, its bf16 copy, or a temporary f32 conversion.
enum View<M> {
    Borrowed(DevPtr),
    Temp(M, DevPtr),
}

impl<M> View<M> {
    fn ptr(&self) -> DevPtr {
        match self {
            View::Borrowed(p) | View::Temp(_, p) => *p,
        }
    }
}

/// Panics unless `b` holds at least `n` elements: what the kernel about to run accesses through it.
fn need<M>(what: &str, b: &DevBuf<M>, n: usize) {
    assert!(b.n >= n, "{what}: a buffer of {} elements where {n} are needed", b.n);
}

/// Width W = C + 2 NKV HS of a grouped qkv row (C = NH HS channels of query heads, NKV kv heads); the
/// launchers check that NKV divides NH and NH divides C.
fn qkv_width(c: usize, nh: usize, nkv: usize) -> usize {
    assert!(nh > 0, "attention: NH = 0");
    c + 2 * nkv * (c / nh)
}

/// Panics unless every id is below `bound` (ids index rows of another buffer in the kernels).
fn ids_below(what: &str, ids: &[u32], bound: usize) {
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= bound) {
        panic!("{what}: id {bad} out of range (< {bound} required)");
    }
}

/// Device failures inside ops are bugs or a dead device: reported by a panic (see crate::backend).
fn ok<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

const F32: DType = DType::F32;

impl<D: Device> KernelBackend<D> {
    pub fn with_device(dev: D, compute: DType) -> Self {
        KernelBackend { dev, compute, consts: Mutex::new(Vec::new()) }
    }

    /// `bytes` on the device, from the cache of the most recently used ones (the least recently used is
    /// evicted, and freed in stream order, after the kernels that read it). The pointer stays valid for the
    /// next CONSTS_KEPT - 1 calls, so one op may hold several (rope: its table and the positions); a hit
    /// becomes the most recent entry, so the call after it cannot evict it.
    fn device_copy(&self, bytes: &[u8]) -> DevPtr {
        let mut cache = self.consts.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().position(|(b, _)| b == bytes) {
            Some(i) => {
                let hit = cache.remove(i);
                cache.push(hit);
            }
            None => {
                if cache.len() >= CONSTS_KEPT {
                    cache.remove(0);
                }
                let m = self.upload_bytes(bytes);
                cache.push((bytes.to_vec(), m));
            }
        }
        self.p(&cache.last().expect("an entry was just pushed").1)
    }

    fn positions(&self, pos0: &[u32]) -> DevPtr {
        self.device_copy(bytemuck::cast_slice(pos0))
    }

    fn l(&self) -> &dyn kl::Launcher {
        self.dev.launcher()
    }

    fn alloc(&self, n: usize, dt: DType) -> D::Mem {
        ok("device allocation", self.dev.alloc(n * dt.size()))
    }

    fn p(&self, m: &D::Mem) -> DevPtr {
        self.dev.ptr(m)
    }

    /// Converts n elements from `src` (type `from`) into `dst` (type `to`).
    ///
    /// # Safety
    /// `dst` must address `n` elements of `to` and `src` `n` elements of `from`, in this backend's memory.
    unsafe fn cast(&self, dst: DevPtr, to: DType, src: DevPtr, from: DType, n: usize) {
        let r = match (from, to) {
            (a, b) if a == b => self.dev.dtod(dst, src, n * a.size()),
            (DType::F32, DType::BF16) => kl::cast_f32_to_bf16(self.l(), dst, src, n),
            _ => kl::cast_bf16_to_f32(self.l(), dst, src, n),
        };
        ok("cast", r)
    }

    /// `b` as a kernel reading type `dt` sees it.
    fn view(&self, b: &DevBuf<D::Mem>, dt: DType) -> View<D::Mem> {
        if b.dt == dt {
            return View::Borrowed(self.p(&b.mem));
        }
        if b.dt == F32 {
            let half = b.half.get_or_init(|| {
                let h = self.alloc(b.n, DType::BF16);
                // SAFETY: `h` was just allocated with b.n bf16 elements; b.mem holds b.n f32.
                unsafe { self.cast(self.p(&h), DType::BF16, self.p(&b.mem), F32, b.n) };
                h
            });
            return View::Borrowed(self.p(half));
        }
        let tmp = self.alloc(b.n, F32);
        let p = self.p(&tmp);
        // SAFETY: `tmp` was just allocated with b.n f32 elements; b.mem holds b.n elements of b.dt.
        unsafe { self.cast(p, F32, self.p(&b.mem), b.dt, b.n) };
        View::Temp(tmp, p)
    }

    /// `b` about to be written (or updated in place) by a kernel of type `dt`: converted (values kept) if
    /// it is stored otherwise; its bf16 copy, now stale, is dropped.
    fn target(&self, b: &mut DevBuf<D::Mem>, dt: DType) -> DevPtr {
        b.half.take();
        if b.dt != dt {
            let m = self.alloc(b.n, dt);
            // SAFETY: `m` was just allocated with b.n elements of dt; b.mem holds b.n elements of b.dt.
            unsafe { self.cast(self.p(&m), dt, self.p(&b.mem), b.dt, b.n) };
            b.mem = m;
            b.dt = dt;
        }
        self.p(&b.mem)
    }

    /// RoPE forward (or, with `transposed`, backward) in place on `x`'s q and k heads.
    fn rope(&self, x: &mut DevBuf<D::Mem>, rope: &Rope, pos0: &[u32], s: kl::RopeShape, transposed: bool) {
        let what = if transposed { "rope_backward" } else { "rope_forward" };
        assert!(pos0.len() >= s.b, "{what}: {} positions for {} rows", pos0.len(), s.b);
        need(what, x, s.b * s.t * (s.nh + 2 * s.nkv) * s.hs);
        let inv: Vec<f32> = rope.inv_freq.iter().map(|&f| f as f32).collect();
        let (fd, pd) = (self.device_copy(bytemuck::cast_slice(&inv)), self.positions(pos0));
        let dt = x.dt;
        let p = self.target(x, dt);
        // SAFETY: a live buffer of this backend, its size checked above; `fd` holds the hs/2 frequencies (the
        // table's length is the head size's half by construction), `pd` pos0.
        let r = unsafe {
            if transposed {
                kl::rope_backward(self.l(), dt, p, fd, pd, s)
            } else {
                kl::rope_forward(self.l(), dt, p, fd, pd, s)
            }
        };
        ok(what, r);
    }

    fn scratch(&self, bytes: usize) -> D::Mem {
        ok("device allocation", self.dev.alloc(bytes))
    }

    fn upload_bytes(&self, bytes: &[u8]) -> D::Mem {
        let m = self.scratch(bytes.len());
        // SAFETY: `m` was just allocated with bytes.len() bytes.
        ok("upload", unsafe { self.dev.htod(self.p(&m), bytes) });
        m
    }
}

impl<D: Device> Backend for KernelBackend<D> {
    type F = f32;
    type Buf = DevBuf<D::Mem>;
    type Ids = DevIds<D::Mem>;

    fn name(&self) -> String {
        match self.compute {
            DType::F32 => format!("{}, f32", self.dev.name()),
            DType::BF16 => format!("{}, bf16 compute / f32 master weights", self.dev.name()),
        }
    }

    // ---- memory ----
    fn zeros(&self, n: usize) -> Result<Self::Buf> {
        Ok(DevBuf { n, dt: self.compute, mem: self.dev.alloc(n * self.compute.size())?, half: OnceLock::new() })
    }
    fn zeros_full(&self, n: usize) -> Result<Self::Buf> {
        Ok(DevBuf { n, dt: F32, mem: self.dev.alloc(n * 4)?, half: OnceLock::new() })
    }
    fn roundoff(&self) -> f64 {
        match self.compute {
            DType::F32 => f32::EPSILON as f64 / 2.0,
            DType::BF16 => 2f64.powi(-8),
        }
    }
    /// Host data is kept exactly: f32 storage (a bf16 copy is made when a bf16 kernel first reads it).
    fn upload(&self, data: &[f32]) -> Result<Self::Buf> {
        let mem = self.dev.alloc(data.len() * 4)?;
        // SAFETY: `mem` was just allocated with the byte length of `data`.
        unsafe { self.dev.htod(self.dev.ptr(&mem), bytemuck::cast_slice(data))? };
        Ok(DevBuf { n: data.len(), dt: F32, mem, half: OnceLock::new() })
    }
    fn download(&self, buf: &Self::Buf) -> Vec<f32> {
        match buf.dt {
            DType::F32 => {
                let mut v = vec![0f32; buf.n];
                // SAFETY: buf.mem holds buf.n f32, the length of `v`.
                ok("download", unsafe { self.dev.dtoh(bytemuck::cast_slice_mut(&mut v), self.p(&buf.mem)) });
                v
            }
            DType::BF16 => {
                let mut v = vec![bf16::ZERO; buf.n];
                // SAFETY: buf.mem holds buf.n bf16, the length of `v`.
                ok("download", unsafe { self.dev.dtoh(bytemuck::cast_slice_mut(&mut v), self.p(&buf.mem)) });
                v.iter().map(|x| x.to_f32()).collect()
            }
        }
    }
    fn upload_ids(&self, ids: &[u32]) -> Result<Self::Ids> {
        Ok(DevIds { mem: self.upload_bytes(bytemuck::cast_slice(ids)), host: ids.to_vec() })
    }
    fn len(&self, buf: &Self::Buf) -> usize {
        buf.n
    }
    fn fill_zero(&self, buf: &mut Self::Buf) {
        buf.half.take();
        // SAFETY: buf.mem holds buf.n elements of buf.dt.
        ok("memset", unsafe { self.dev.memset0(self.p(&buf.mem), buf.n * buf.dt.size()) });
    }
    fn copy(&self, dst: &mut Self::Buf, dst_off: usize, src: &Self::Buf, src_off: usize, n: usize) {
        assert!(dst_off + n <= dst.n && src_off + n <= src.n, "copy of {n} elements out of bounds");
        dst.half.take();
        let d = self.p(&dst.mem) + (dst_off * dst.dt.size()) as u64;
        let s = self.p(&src.mem) + (src_off * src.dt.size()) as u64;
        // SAFETY: both ranges lie inside their buffers (asserted above).
        unsafe { self.cast(d, dst.dt, s, src.dt, n) };
    }

    // ---- ops ----
    fn encoder_forward(
        &self,
        out: &mut Self::Buf,
        tokens: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        pos0: &[u32],
        t: usize,
        c: usize,
    ) {
        let (dt, bt) = (out.dt, pos0.len() * t);
        need("encoder_forward", out, bt * c);
        let ids = &tokens.host[..bt];
        ids_below("encoder_forward tokens", ids, wte.n / c.max(1));
        need("encoder_forward wpe", wpe, (pos0.iter().max().map_or(0, |&p| p as usize) + t) * c);
        let (vw, vp, pd) = (self.view(wte, dt), self.view(wpe, dt), self.positions(pos0));
        let o = self.target(out, dt);
        // SAFETY: live buffers of this backend, sizes and token ids checked above; `pd` holds pos0.
        let r = unsafe {
            kl::encoder_forward(self.l(), dt, o, self.p(&tokens.mem), vw.ptr(), vp.ptr(), pd, pos0.len(), t, c)
        };
        ok("encoder_forward", r);
    }
    fn encoder_backward(
        &self,
        dwte: &mut Self::Buf,
        dwpe: Option<&mut Self::Buf>,
        dout: &Self::Buf,
        tokens: &Self::Ids,
        pos0: &[u32],
        t: usize,
        c: usize,
    ) {
        let (dt, bt) = (dwte.dt, pos0.len() * t);
        let ids = &tokens.host[..bt];
        ids_below("encoder_backward tokens", ids, dwte.n / c.max(1));
        if let Some(dwpe) = dwpe.as_deref() {
            need("encoder_backward dwpe", dwpe, (pos0.iter().max().map_or(0, |&p| p as usize) + t) * c);
        }
        need("encoder_backward dout", dout, bt * c);
        let plan = kl::EncoderPlan::new(ids);
        let (plan_d, pd, vd) =
            (self.upload_bytes(bytemuck::cast_slice(&plan.data)), self.positions(pos0), self.view(dout, dt));
        let (gw, gp) = (self.target(dwte, dt), dwpe.map(|d| self.target(d, dt)));
        // SAFETY: live buffers of this backend, sizes and token ids checked above; `plan_d` is the upload of
        // `plan` (built from those ids), `pd` of pos0.
        let r = unsafe {
            kl::encoder_backward(self.l(), dt, gw, gp, vd.ptr(), self.p(&plan_d), plan.buckets, pd, pos0, t, c)
        };
        ok("encoder_backward", r);
    }
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        c: usize,
    ) {
        let (dt, n) = (out.dt, inp.n / c);
        need("layernorm_forward", out, n * c);
        [&*mean, &*rstd].iter().for_each(|x| need("layernorm_forward", x, n));
        [w, b].iter().for_each(|x| need("layernorm_forward", x, c));
        let (vi, vw, vb) = (self.view(inp, dt), self.view(w, dt), self.view(b, dt));
        let (o, m, r) = (self.target(out, dt), self.target(mean, F32), self.target(rstd, F32));
        // SAFETY: live buffers of this backend, sizes checked above.
        let res = unsafe { kl::layernorm_forward(self.l(), dt, o, m, r, vi.ptr(), vw.ptr(), vb.ptr(), n, c) };
        ok("layernorm_forward", res);
    }
    fn residual_layernorm_forward(
        &self,
        residual: &mut Self::Buf,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        c: usize,
    ) {
        let (dt, n) = (out.dt, a.n / c);
        [&*residual, &*out, b].iter().for_each(|x| need("residual_layernorm_forward", x, n * c));
        [&*mean, &*rstd].iter().for_each(|x| need("residual_layernorm_forward", x, n));
        [w, bias].iter().for_each(|x| need("residual_layernorm_forward", x, c));
        let (va, vb, vw, vbias) = (self.view(a, dt), self.view(b, dt), self.view(w, dt), self.view(bias, dt));
        let (r, o, m, s) =
            (self.target(residual, dt), self.target(out, dt), self.target(mean, F32), self.target(rstd, F32));
        // SAFETY: live buffers of this backend, sizes checked above.
        let res = unsafe {
            kl::residual_layernorm_forward(self.l(), dt, r, o, m, s, va.ptr(), vb.ptr(), vw.ptr(), vbias.ptr(), n, c)
        };
        ok("residual_layernorm_forward", res);
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        c: usize,
    ) {
        let (dt, n) = (dinp.dt, inp.n / c);
        [&*dinp, dout].iter().for_each(|x| need("layernorm_backward", x, n * c));
        [&*dw, &*db, w].iter().for_each(|x| need("layernorm_backward", x, c));
        [mean, rstd].iter().for_each(|x| need("layernorm_backward", x, n));
        let (vd, vi, vw) = (self.view(dout, dt), self.view(inp, dt), self.view(w, dt));
        let (vm, vr) = (self.view(mean, F32), self.view(rstd, F32));
        let s = self.scratch(kl::layernorm_backward_scratch_bytes(n, c));
        let (gi, gw, gb) = (self.target(dinp, dt), self.target(dw, dt), self.target(db, dt));
        // SAFETY: live buffers of this backend, sizes checked above; `s` has the scratch size asked for.
        let res = unsafe {
            kl::layernorm_backward(
                self.l(),
                dt,
                gi,
                gw,
                gb,
                vd.ptr(),
                vi.ptr(),
                vw.ptr(),
                vm.ptr(),
                vr.ptr(),
                n,
                c,
                self.p(&s),
            )
        };
        ok("layernorm_backward", res);
    }
    fn rmsnorm_forward(
        &self,
        out: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        c: usize,
        eps: f64,
    ) {
        let (dt, n) = (out.dt, inp.n / c);
        need("rmsnorm_forward", out, n * c);
        need("rmsnorm_forward rstd", rstd, n);
        need("rmsnorm_forward w", w, c);
        let (vi, vw) = (self.view(inp, dt), self.view(w, dt));
        let (o, r) = (self.target(out, dt), self.target(rstd, F32));
        // SAFETY: live buffers of this backend, sizes checked above.
        let res = unsafe { kl::rmsnorm_forward(self.l(), dt, o, r, vi.ptr(), vw.ptr(), n, c, eps) };
        ok("rmsnorm_forward", res);
    }
    fn rmsnorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        c: usize,
    ) {
        let (dt, n) = (dinp.dt, inp.n / c);
        [&*dinp, dout].iter().for_each(|x| need("rmsnorm_backward", x, n * c));
        [&*dw, w].iter().for_each(|x| need("rmsnorm_backward", x, c));
        need("rmsnorm_backward rstd", rstd, n);
        let (vd, vi, vw, vr) = (self.view(dout, dt), self.view(inp, dt), self.view(w, dt), self.view(rstd, F32));
        let s = self.scratch(kl::rmsnorm_backward_scratch_bytes(n, c));
        let (gi, gw) = (self.target(dinp, dt), self.target(dw, dt));
        // SAFETY: live buffers of this backend, sizes checked above; `s` has the scratch size asked for.
        let res = unsafe {
            kl::rmsnorm_backward(self.l(), dt, gi, gw, vd.ptr(), vi.ptr(), vw.ptr(), vr.ptr(), n, c, self.p(&s))
        };
        ok("rmsnorm_backward", res);
    }
    fn matmul(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        accumulate: bool,
    ) {
        need("matmul a", a, m * k);
        need("matmul b", b, k * n);
        need("matmul out", out, m * n);
        let (va, vb) = (self.view(a, self.compute), self.view(b, self.compute));
        let out_dt = out.dt;
        let o = self.target(out, out_dt);
        let g = Gemm::single(
            o,
            va.ptr(),
            vb.ptr(),
            m,
            n,
            k,
            ta,
            tb,
            self.compute,
            out_dt,
            if accumulate { 1.0 } else { 0.0 },
        );
        // SAFETY: live buffers of this backend, sizes checked above.
        ok("matmul", unsafe { self.dev.gemm(&g) });
    }
    /// The bias rides in the GEMM's epilogue (one pass over the output instead of two); should the library
    /// refuse that combination, a separate bias kernel does it (said once on stderr).
    fn linear_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        need("linear_forward inp", inp, n * c);
        need("linear_forward w", w, oc * c);
        need("linear_forward out", out, n * oc);
        if let Some(b) = bias {
            need("linear_forward bias", b, oc);
        }
        let (vi, vw) = (self.view(inp, self.compute), self.view(w, self.compute));
        let out_dt = out.dt;
        let vb = bias.map(|b| self.view(b, out_dt));
        let o = self.target(out, out_dt);
        let mut g = Gemm::single(o, vi.ptr(), vw.ptr(), n, oc, c, false, false, self.compute, out_dt, 0.0);
        g.bias = vb.as_ref().map_or(0, |b| b.ptr());
        // SAFETY (the products and the bias kernel): live buffers of this backend, sizes checked above.
        match (unsafe { self.dev.gemm(&g) }, &vb) {
            (Ok(()), _) => {}
            (Err(e), Some(vb)) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    eprintln!("note: GEMM with a bias epilogue refused ({e:#}); adding biases in a separate kernel")
                });
                g.bias = 0;
                ok("matmul", unsafe { self.dev.gemm(&g) });
                ok("bias_add", unsafe { kl::bias_add(self.l(), out_dt, o, vb.ptr(), n, oc) });
            }
            (Err(e), None) => panic!("matmul: {e:#}"),
        }
    }
    fn bias_add(&self, out: &mut Self::Buf, bias: &Self::Buf) {
        let (dt, oc) = (out.dt, bias.n);
        let vb = self.view(bias, dt);
        let n = out.n / oc;
        let o = self.target(out, dt);
        // SAFETY: out holds n * oc elements (n = out.n / oc), bias oc.
        ok("bias_add", unsafe { kl::bias_add(self.l(), dt, o, vb.ptr(), n, oc) });
    }
    fn bias_backward(&self, dbias: &mut Self::Buf, dout: &Self::Buf) {
        let (dt, oc) = (dbias.dt, dbias.n);
        let n = dout.n / oc;
        let (vd, s) = (self.view(dout, dt), self.scratch(kl::bias_backward_scratch_bytes(n, oc)));
        let g = self.target(dbias, dt);
        // SAFETY: dbias holds oc elements, dout n * oc (n = dout.n / oc); `s` has the scratch size asked for.
        ok("bias_backward", unsafe { kl::bias_backward(self.l(), dt, g, vd.ptr(), n, oc, self.p(&s)) });
    }
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf) {
        let dt = out.dt;
        need("gelu_forward", out, inp.n);
        let vi = self.view(inp, dt);
        let o = self.target(out, dt);
        // SAFETY: live buffers of this backend, sizes checked above.
        ok("gelu_forward", unsafe { kl::gelu_forward(self.l(), dt, o, vi.ptr(), inp.n) });
    }
    fn gelu_backward(&self, dinp: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf) {
        let dt = dinp.dt;
        [&*dinp, dout].iter().for_each(|x| need("gelu_backward", x, inp.n));
        let (vi, vd) = (self.view(inp, dt), self.view(dout, dt));
        let g = self.target(dinp, dt);
        // SAFETY: live buffers of this backend, sizes checked above.
        ok("gelu_backward", unsafe { kl::gelu_backward(self.l(), dt, g, vi.ptr(), vd.ptr(), inp.n) });
    }
    fn swiglu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, f: usize) {
        let (dt, n) = (out.dt, inp.n / (2 * f));
        need("swiglu_forward", out, n * f);
        let vi = self.view(inp, dt);
        let o = self.target(out, dt);
        // SAFETY: live buffers of this backend, sizes checked above (inp holds n * 2f by the choice of n).
        ok("swiglu_forward", unsafe { kl::swiglu_forward(self.l(), dt, o, vi.ptr(), n, f) });
    }
    fn swiglu_backward(&self, dinp: &mut Self::Buf, dout: &Self::Buf, inp: &Self::Buf, f: usize) {
        let (dt, n) = (dinp.dt, inp.n / (2 * f));
        need("swiglu_backward dinp", dinp, n * 2 * f);
        need("swiglu_backward dout", dout, n * f);
        let (vd, vi) = (self.view(dout, dt), self.view(inp, dt));
        let g = self.target(dinp, dt);
        // SAFETY: live buffers of this backend, sizes checked above (inp holds n * 2f by the choice of n).
        ok("swiglu_backward", unsafe { kl::swiglu_backward(self.l(), dt, g, vd.ptr(), vi.ptr(), n, f) });
    }
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf) {
        let dt = out.dt;
        [&*out, b].iter().for_each(|x| need("add", x, a.n));
        let (va, vb) = (self.view(a, dt), self.view(b, dt));
        let o = self.target(out, dt);
        // SAFETY: live buffers of this backend, sizes checked above.
        ok("add", unsafe { kl::add(self.l(), dt, o, va.ptr(), vb.ptr(), a.n) });
    }
    fn accumulate(&self, dst: &mut Self::Buf, src: &Self::Buf) {
        let dt = dst.dt;
        need("accumulate", dst, src.n);
        let vs = self.view(src, dt);
        let d = self.target(dst, dt);
        // SAFETY: live buffers of this backend, sizes checked above.
        ok("accumulate", unsafe { kl::accumulate(self.l(), dt, d, vs.ptr(), src.n) });
    }
    fn scale(&self, buf: &mut Self::Buf, s: f64) {
        let (dt, n) = (buf.dt, buf.n);
        let p = self.target(buf, dt);
        // SAFETY: buf holds n elements of dt.
        ok("scale", unsafe { kl::scale(self.l(), dt, p, s as f32, n) });
    }
    fn rope_forward(&self, qkv: &mut Self::Buf, rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize) {
        self.rope(qkv, rope, pos0, kl::RopeShape { b, t, nh, nkv, hs: rope.head_dim() }, false)
    }
    fn rope_backward(
        &self,
        dqkv: &mut Self::Buf,
        rope: &Rope,
        pos0: &[u32],
        b: usize,
        t: usize,
        nh: usize,
        nkv: usize,
    ) {
        self.rope(dqkv, rope, pos0, kl::RopeShape { b, t, nh, nkv, hs: rope.head_dim() }, true)
    }
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        q_src: &Self::Buf,
        kv: &Self::Buf,
        pos0: &[u32],
        b: usize,
        tq: usize,
        tk: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        let dt = out.dt;
        assert!(pos0.len() >= b, "attention_forward: {} positions for {b} rows", pos0.len());
        let w = qkv_width(c, nh, nkv);
        need("attention_forward out", out, b * tq * c);
        need("attention_forward lse", lse, b * nh * tq);
        need("attention_forward q_src", q_src, b * tq * w);
        need("attention_forward kv", kv, b * tk * w);
        let (vq, vkv, pd) = (self.view(q_src, dt), self.view(kv, dt), self.positions(pos0));
        let (o, l) = (self.target(out, dt), self.target(lse, F32));
        // SAFETY: live buffers of this backend, sizes checked above; `pd` holds pos0.
        let r = unsafe {
            if tq == 1 {
                // A decode step: the kernel that splits a row's keys among the warps of a block.
                kl::attention_decode(self.l(), dt, o, l, vq.ptr(), vkv.ptr(), pd, b, tk, c, nh, nkv)
            } else {
                kl::attention_forward(self.l(), dt, o, l, vq.ptr(), vkv.ptr(), pd, b, tq, tk, c, nh, nkv)
            }
        };
        ok("attention_forward", r);
    }
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        let dt = dqkv.dt;
        let w = qkv_width(c, nh, nkv);
        [&*dqkv, qkv].iter().for_each(|x| need("attention_backward", x, b * t * w));
        [dout, out].iter().for_each(|x| need("attention_backward", x, b * t * c));
        need("attention_backward lse", lse, b * nh * t);
        let (vd, vq, vo, vl) = (self.view(dout, dt), self.view(qkv, dt), self.view(out, dt), self.view(lse, F32));
        let s = self.scratch(kl::attention_backward_scratch_bytes(b, t, nh));
        let g = self.target(dqkv, dt);
        // SAFETY: live buffers of this backend, sizes checked above; `s` has the scratch size asked for.
        let r = unsafe {
            kl::attention_backward(
                self.l(),
                dt,
                g,
                vd.ptr(),
                vq.ptr(),
                vo.ptr(),
                vl.ptr(),
                b,
                t,
                c,
                nh,
                nkv,
                self.p(&s),
            )
        };
        ok("attention_backward", r);
    }
    fn crossentropy(
        &self,
        losses: &mut Self::Buf,
        logits: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        v: usize,
        vp: usize,
        inv_temp: f64,
        want_grad: bool,
    ) {
        let (dt, n) = (logits.dt, losses.n);
        need("crossentropy logits", logits, n * vp);
        need("crossentropy weights", weights, n);
        ids_below("crossentropy targets", &targets.host[..n], v);
        let vw = self.view(weights, F32);
        let (lo, lg) = (self.target(losses, F32), self.target(logits, dt));
        // SAFETY: live buffers of this backend, sizes and targets checked above.
        let r = unsafe {
            kl::crossentropy(self.l(), dt, lo, lg, self.p(&targets.mem), vw.ptr(), n, v, vp, inv_temp as f32, want_grad)
        };
        ok("crossentropy", r);
    }
    fn entropy(
        &self,
        ent: &mut Self::Buf,
        dlogits: &mut Self::Buf,
        logits: &Self::Buf,
        coef: &Self::Buf,
        v: usize,
        vp: usize,
        inv_temp: f64,
        want_grad: bool,
    ) -> Result<()> {
        let (dt, n) = (logits.dt, coef.n);
        need("entropy", ent, n);
        need("entropy logits", logits, n * vp);
        if want_grad {
            need("entropy dlogits", dlogits, n * vp);
        }
        let (vl, vc) = (self.view(logits, dt), self.view(coef, F32));
        let e = self.target(ent, F32);
        let d = if want_grad { self.target(dlogits, dt) } else { 0 };
        // SAFETY: live buffers of this backend, sizes checked above (dlogits is not read without want_grad).
        unsafe { kl::entropy(self.l(), dt, e, d, vl.ptr(), vc.ptr(), n, v, vp, inv_temp as f32, want_grad) }
    }
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: &AdamWParams) {
        use std::slice::{from_mut, from_ref};
        self.adamw_all(from_mut(param), from_ref(grad), from_mut(m), from_mut(v), from_ref(h));
    }
    /// Parameters become (stay) f32 master weights. One launch per kernel type over every tensor: in mixed
    /// precision a bf16 gradient takes the bf16 kernel, which also writes the updated master's rounding into
    /// the working copy; any other gradient the f32 kernel. Steps that differ in more than weight decay
    /// (never from `AdamW::update`) are taken tensor by tensor.
    fn adamw_all(
        &self,
        params: &mut [Self::Buf],
        grads: &[Self::Buf],
        m: &mut [Self::Buf],
        v: &mut [Self::Buf],
        hs: &[AdamWParams],
    ) {
        let same = |a: &AdamWParams, b: &AdamWParams| {
            (a.lr, a.beta1, a.beta2, a.eps, a.step, a.grad_scale)
                == (b.lr, b.beta1, b.beta2, b.eps, b.step, b.grad_scale)
        };
        if !hs.iter().all(|h| same(h, &hs[0])) {
            for i in 0..hs.len() {
                let r = i..i + 1;
                self.adamw_all(&mut params[r.clone()], &grads[r.clone()], &mut m[r.clone()], &mut v[r.clone()], &hs[r]);
            }
            return;
        }
        let (mut halves, mut grad_views) = (Vec::new(), Vec::new());
        let (mut bf16_tensors, mut f32_tensors) = (Vec::new(), Vec::new());
        for i in 0..hs.len() {
            let n = params[i].n;
            [&grads[i], &m[i], &v[i]].iter().for_each(|x| need("adamw", x, n));
            let (pm, pv) = (self.target(&mut m[i], F32), self.target(&mut v[i], F32));
            let weight_decay = hs[i].weight_decay;
            let tensor = |param, master, grad| kl::AdamWTensor { param, master, grad, m: pm, v: pv, n, weight_decay };
            if self.compute == DType::BF16 && grads[i].dt == DType::BF16 {
                let half = params[i].half.take().unwrap_or_else(|| self.alloc(params[i].n, DType::BF16));
                let master = self.target(&mut params[i], F32);
                bf16_tensors.push(tensor(self.p(&half), master, self.p(&grads[i].mem)));
                halves.push((i, half));
            } else {
                let vg = self.view(&grads[i], F32);
                f32_tensors.push(tensor(self.target(&mut params[i], F32), 0, vg.ptr()));
                grad_views.push(vg); // alive until the launch
            }
        }
        for (dt, tensors) in [(DType::BF16, bf16_tensors), (F32, f32_tensors)] {
            if !tensors.is_empty() {
                let table = ok("adamw", kl::adamw_chunks(dt, &tensors));
                let t = self.device_copy(bytemuck::cast_slice(&table));
                // SAFETY: the table lists ranges of live buffers of this backend (sizes checked above; the
                // bf16 working copies and grad views are kept alive until after the launch) and `t` is its
                // upload.
                ok("adamw", unsafe { kl::adamw_multi(self.l(), dt, t, table.len(), &hs[0]) });
            }
        }
        for (i, half) in halves {
            let _ = params[i].half.set(half);
        }
    }
    /// One launch over every row; the table of pairs goes up as one small array.
    fn copy_rows(&self, dst: &mut Self::Buf, src: &Self::Buf, w: usize, rows: &[(u32, u32)]) {
        let dt = dst.dt;
        let (d_rows, s_rows) = (dst.n / w.max(1), src.n / w.max(1));
        let (d, s): (Vec<u32>, Vec<u32>) = rows.iter().copied().unzip();
        ids_below("copy_rows destination", &d, d_rows);
        ids_below("copy_rows source", &s, s_rows);
        let pairs: Vec<u32> = rows.iter().flat_map(|&(d, s)| [d, s]).collect();
        let vs = self.view(src, dt);
        let (table, o) = (self.device_copy(bytemuck::cast_slice(&pairs)), self.target(dst, dt));
        // SAFETY: live buffers of this backend (distinct: `dst` is borrowed mutably), every row index checked
        // above; `table` holds the pairs.
        ok("copy_rows", unsafe { kl::copy_rows(self.l(), dt, o, vs.ptr(), table, rows.len(), w) });
    }
    /// The sampling kernel on the logits where they are: only the uniforms go up and only the ids and
    /// log-probs come down (8 bytes a row).
    fn sample(&self, logits: &Self::Buf, v: usize, vp: usize, s: &Sampling, u: &[f64]) -> Result<Vec<(u32, f32)>> {
        let (dt, rows) = (logits.dt, u.len());
        need("sample logits", logits, rows * vp);
        let vl = self.view(logits, dt);
        let (ud, ids, lps) =
            (self.upload_bytes(bytemuck::cast_slice(u)), self.scratch(rows * 4), self.scratch(rows * 4));
        // SAFETY: `logits` is a live buffer of this backend holding rows * vp elements (checked above); `ud`,
        // `ids` and `lps` were just allocated with rows f64, u32 and f32.
        unsafe { kl::sample(self.l(), dt, self.p(&ids), self.p(&lps), vl.ptr(), self.p(&ud), rows, v, vp, s)? };
        let (mut id, mut lp) = (vec![0u32; rows], vec![0f32; rows]);
        // SAFETY: `ids` and `lps` hold rows u32 and f32, the lengths of `id` and `lp`.
        unsafe {
            self.dev.dtoh(bytemuck::cast_slice_mut(&mut id), self.p(&ids))?;
            self.dev.dtoh(bytemuck::cast_slice_mut(&mut lp), self.p(&lps))?;
        }
        id.into_iter()
            .zip(lp)
            .map(|(i, lp)| match (i as usize).checked_sub(v) {
                Some(bad) => Err(crate::ops::sample::non_finite(bad, lp)),
                None => Ok((i, lp)),
            })
            .collect()
    }
    fn sum_squares(&self, buf: &Self::Buf) -> f64 {
        self.sum_squares_all(std::slice::from_ref(buf))
    }
    /// One multi-tensor reduction (two launches) per storage type present, one download.
    fn sum_squares_all(&self, bufs: &[Self::Buf]) -> f64 {
        let mut results = Vec::new();
        for dt in [F32, DType::BF16] {
            let of_dt: Vec<(DevPtr, usize)> =
                bufs.iter().filter(|b| b.dt == dt).map(|b| (self.p(&b.mem), b.n)).collect();
            if !of_dt.is_empty() {
                let table = kl::sum_squares_chunks(dt, &of_dt);
                let t = self.device_copy(bytemuck::cast_slice(&table));
                let s = self.scratch(kl::sum_squares_multi_scratch_bytes(table.len()));
                // SAFETY: the table lists whole live buffers of this backend, `t` is its upload and `s` has the
                // scratch size asked for.
                ok("sum_squares", unsafe { kl::sum_squares_multi(self.l(), dt, t, table.len(), self.p(&s)) });
                results.push(s);
            }
        }
        results
            .iter()
            .map(|s| {
                let mut out = [0u8; 8];
                // SAFETY: the scratch starts with the f64 result.
                ok("download", unsafe { self.dev.dtoh(&mut out, self.p(s)) });
                f64::from_le_bytes(out)
            })
            .sum()
    }
}
