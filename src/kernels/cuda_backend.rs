//! The engine's [`Backend`] on an NVIDIA GPU, f32 storage: every op through the launch layer with
//! [`CudaLauncher`] (the same calls `SimBackend` makes in the simulator, where they are tested), matrix
//! products through cuBLASLt (TF32 tensor-core compute: about 1e-3 relative error, unlike the CPU engine's
//! f32), one stream, modules loaded once.
//!
//! Status: compiled and shaped like the simulator-tested `SimBackend`, but not yet run on a GPU (no GPU
//! here); `tests/kernels_gpu.rs` checks the launcher on a GPU. `--device cuda` (and `auto` where a GPU is
//! usable) selects it.

use super::cuda::CudaLauncher;
use super::launch::{self as kl, DType, DevPtr};
use crate::backend::Backend;
use crate::ops::adamw::AdamWParams;
use anyhow::{anyhow, Result};
use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

pub struct CudaBackend {
    launcher: CudaLauncher,
    stream: Arc<CudaStream>,
    blas: CudaBlasLT,
}

/// Token ids on the device, with the host copy the embedding backward buckets by token.
pub struct CudaIds {
    dev: CudaSlice<u32>,
    host: Vec<u32>,
}

const DT: DType = DType::F32;

fn die<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA {what}: {e:#}"))
}

impl CudaBackend {
    /// Device `ordinal`; an error (never a panic) where there is no usable GPU.
    pub fn new(ordinal: usize) -> Result<Self> {
        let launcher = CudaLauncher::new(ordinal)?;
        let stream = launcher.stream().clone();
        let blas = CudaBlasLT::new(stream.clone()).map_err(|e| anyhow!("cuBLASLt: {e:?}"))?;
        Ok(CudaBackend { launcher, stream, blas })
    }

    fn p<T>(&self, b: &CudaSlice<T>) -> DevPtr {
        let (ptr, _sync) = b.device_ptr(&self.stream);
        ptr
    }
    fn pm<T>(&self, b: &mut CudaSlice<T>) -> DevPtr {
        let (ptr, _sync) = b.device_ptr_mut(&self.stream);
        ptr
    }
    fn scratch(&self, bytes: usize) -> CudaSlice<u8> {
        die("alloc", self.stream.alloc_zeros::<u8>(bytes.max(16)).map_err(|e| anyhow!("{e}")))
    }
    fn up_u32(&self, x: &[u32]) -> CudaSlice<u32> {
        die("upload", self.stream.clone_htod(x).map_err(|e| anyhow!("{e}")))
    }
}

impl Backend for CudaBackend {
    type F = f32;
    type Buf = CudaSlice<f32>;
    type Ids = CudaIds;

    fn name(&self) -> String {
        format!("cuda (sm_{})", self.launcher.sm)
    }
    fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.stream.alloc_zeros(n).map_err(|e| anyhow!("{e}"))
    }
    fn upload(&self, data: &[f32]) -> Result<CudaSlice<f32>> {
        self.stream.clone_htod(data).map_err(|e| anyhow!("{e}"))
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Vec<f32> {
        die("download", self.stream.clone_dtoh(buf).map_err(|e| anyhow!("{e}")))
    }
    fn upload_ids(&self, ids: &[u32]) -> Result<CudaIds> {
        Ok(CudaIds { dev: self.stream.clone_htod(ids).map_err(|e| anyhow!("{e}"))?, host: ids.to_vec() })
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut CudaSlice<f32>) {
        die("memset", self.stream.memset_zeros(buf).map_err(|e| anyhow!("{e}")))
    }
    fn copy(&self, dst: &mut CudaSlice<f32>, dst_off: usize, src: &CudaSlice<f32>, src_off: usize, n: usize) {
        let s = src.slice(src_off..src_off + n);
        let mut d = dst.slice_mut(dst_off..dst_off + n);
        die("copy", self.stream.memcpy_dtod(&s, &mut d).map_err(|e| anyhow!("{e}")))
    }

    fn encoder_forward(&self, out: &mut CudaSlice<f32>, tokens: &CudaIds, wte: &CudaSlice<f32>, wpe: &CudaSlice<f32>, pos0: &[u32], t: usize, c: usize) {
        let pd = self.up_u32(pos0);
        die("encoder_forward", kl::encoder_forward(&self.launcher, DT, self.pm(out), self.p(&tokens.dev), self.p(wte), self.p(wpe), self.p(&pd), pos0.len(), t, c));
    }
    fn encoder_backward(&self, dwte: &mut CudaSlice<f32>, dwpe: &mut CudaSlice<f32>, dout: &CudaSlice<f32>, tokens: &CudaIds, pos0: &[u32], t: usize, c: usize) {
        let plan = kl::EncoderPlan::new(&tokens.host[..pos0.len() * t]);
        let plan_d = self.up_u32(&plan.data);
        let pd = self.up_u32(pos0);
        die("encoder_backward", kl::encoder_backward(&self.launcher, DT, self.pm(dwte), self.pm(dwpe), self.p(dout), self.p(&plan_d), plan.buckets, self.p(&pd), pos0, t, c));
    }
    fn layernorm_forward(&self, out: &mut CudaSlice<f32>, mean: &mut CudaSlice<f32>, rstd: &mut CudaSlice<f32>, inp: &CudaSlice<f32>, w: &CudaSlice<f32>, b: &CudaSlice<f32>, c: usize) {
        let n = inp.len() / c;
        die("layernorm_forward", kl::layernorm_forward(&self.launcher, DT, self.pm(out), self.pm(mean), self.pm(rstd), self.p(inp), self.p(w), self.p(b), n, c));
    }
    fn layernorm_backward(&self, dinp: &mut CudaSlice<f32>, dw: &mut CudaSlice<f32>, db: &mut CudaSlice<f32>, dout: &CudaSlice<f32>, inp: &CudaSlice<f32>, w: &CudaSlice<f32>, mean: &CudaSlice<f32>, rstd: &CudaSlice<f32>, c: usize) {
        let n = inp.len() / c;
        let s = self.scratch(kl::layernorm_backward_scratch_bytes(n, c));
        die("layernorm_backward", kl::layernorm_backward(&self.launcher, DT, self.pm(dinp), self.pm(dw), self.pm(db), self.p(dout), self.p(inp), self.p(w), self.p(mean), self.p(rstd), n, c, self.p(&s)));
    }
    /// Row-major out[M,N] (+)= op(a) op(b) as column-major out^T = op(b)^T op(a)^T.
    fn matmul(&self, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>, m: usize, n: usize, k: usize, ta: bool, tb: bool, accumulate: bool) {
        let cfg = MatmulConfig {
            transa: tb,
            transb: ta,
            transc: false,
            m: n as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: if tb { k } else { n } as i64,
            ldb: if ta { m } else { k } as i64,
            beta: if accumulate { 1.0 } else { 0.0 },
            ldc: n as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        // SAFETY: the buffers hold the matrices the shapes describe (the Backend contract).
        unsafe { self.blas.matmul(cfg, b, a, out, None, None) }.unwrap_or_else(|e| panic!("cuBLASLt matmul {m}x{n}x{k}: {e:?}"));
    }
    fn bias_add(&self, out: &mut CudaSlice<f32>, bias: &CudaSlice<f32>) {
        let oc = bias.len();
        let n = out.len() / oc;
        die("bias_add", kl::bias_add(&self.launcher, DT, self.pm(out), self.p(bias), n, oc));
    }
    fn bias_backward(&self, dbias: &mut CudaSlice<f32>, dout: &CudaSlice<f32>) {
        let oc = dbias.len();
        let n = dout.len() / oc;
        let s = self.scratch(kl::bias_backward_scratch_bytes(n, oc));
        die("bias_backward", kl::bias_backward(&self.launcher, DT, self.pm(dbias), self.p(dout), n, oc, self.p(&s)));
    }
    fn gelu_forward(&self, out: &mut CudaSlice<f32>, inp: &CudaSlice<f32>) {
        die("gelu_forward", kl::gelu_forward(&self.launcher, DT, self.pm(out), self.p(inp), inp.len()));
    }
    fn gelu_backward(&self, dinp: &mut CudaSlice<f32>, inp: &CudaSlice<f32>, dout: &CudaSlice<f32>) {
        die("gelu_backward", kl::gelu_backward(&self.launcher, DT, self.pm(dinp), self.p(inp), self.p(dout), inp.len()));
    }
    fn add(&self, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) {
        die("add", kl::add(&self.launcher, DT, self.pm(out), self.p(a), self.p(b), a.len()));
    }
    fn accumulate(&self, dst: &mut CudaSlice<f32>, src: &CudaSlice<f32>) {
        die("accumulate", kl::accumulate(&self.launcher, DT, self.pm(dst), self.p(src), src.len()));
    }
    fn scale(&self, buf: &mut CudaSlice<f32>, s: f64) {
        let n = buf.len();
        die("scale", kl::scale(&self.launcher, DT, self.pm(buf), s as f32, n));
    }
    fn attention_forward(&self, out: &mut CudaSlice<f32>, lse: &mut CudaSlice<f32>, q_src: &CudaSlice<f32>, kv: &CudaSlice<f32>, pos0: &[u32], b: usize, tq: usize, tk: usize, c: usize, nh: usize) {
        let pd = self.up_u32(pos0);
        die("attention_forward", kl::attention_forward(&self.launcher, DT, self.pm(out), self.pm(lse), self.p(q_src), self.p(kv), self.p(&pd), b, tq, tk, c, nh));
    }
    fn attention_backward(&self, dqkv: &mut CudaSlice<f32>, dout: &CudaSlice<f32>, qkv: &CudaSlice<f32>, out: &CudaSlice<f32>, lse: &CudaSlice<f32>, b: usize, t: usize, c: usize, nh: usize) {
        let s = self.scratch(kl::attention_backward_scratch_bytes(b, t, nh));
        die("attention_backward", kl::attention_backward(&self.launcher, DT, self.pm(dqkv), self.p(dout), self.p(qkv), self.p(out), self.p(lse), b, t, c, nh, self.p(&s)));
    }
    fn crossentropy(&self, losses: &mut CudaSlice<f32>, logits: &mut CudaSlice<f32>, targets: &CudaIds, weights: &CudaSlice<f32>, v: usize, vp: usize, inv_temp: f64, want_grad: bool) {
        let n = losses.len();
        die("crossentropy", kl::crossentropy(&self.launcher, DT, self.pm(losses), self.pm(logits), self.p(&targets.dev), self.p(weights), n, v, vp, inv_temp as f32, want_grad));
    }
    fn adamw(&self, param: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>, h: &AdamWParams) {
        let n = param.len();
        die("adamw", kl::adamw(&self.launcher, DT, self.pm(param), 0, self.p(grad), self.pm(m), self.pm(v), n, h));
    }
    fn sum_squares(&self, buf: &CudaSlice<f32>) -> f64 {
        let mut s = die("alloc", self.stream.alloc_zeros::<f64>(kl::sum_squares_scratch_bytes(buf.len()) / 8).map_err(|e| anyhow!("{e}")));
        die("sum_squares", kl::sum_squares(&self.launcher, DT, self.p(buf), buf.len(), self.pm(&mut s)));
        die("download", self.stream.clone_dtoh(&s.slice(0..1)).map_err(|e| anyhow!("{e}")))[0]
    }
}
