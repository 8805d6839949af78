//! Where the kernels run: the [`Device`] interface that the kernel-backed engine ([`super::engine`]) and the
//! kernel benchmarks are written against, once, and [`SimDevice`], the CPU simulator behind it. The GPU
//! behind it is [`super::cuda_device::CudaDevice`].
//!
//! A device gives raw, zero-initialised memory ([`Device::Mem`], addressed by [`DevPtr`]), copies, the
//! kernel [`Launcher`], and matrix products ([`Gemm`]: cuBLASLt on the GPU; the CPU reference in the
//! simulator, reading and writing the same storage types).

use super::launch::{DType, DevPtr, Launcher};
use super::sim::{SimBuf, SimLauncher};
use anyhow::Result;
use half::bf16;
use std::sync::atomic::{AtomicU64, Ordering};

/// A batch of row-major products `out[M,N] = alpha * op(a) op(b) + beta * out`, where op(a) is [M,K] (a is
/// stored [K,M] when `ta`) and op(b) is [K,N] (b stored [N,K] when `tb`). Product `i` of the batch reads
/// `a + i*stride_a` etc. (strides in elements). Inputs are `in_dt`, the output `out_dt`; accumulation is f32.
/// With `bias` (not 0: a vector of N elements of `out_dt`), bias[j] is added to every row (a fused epilogue).
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
    pub a: DevPtr,
    pub b: DevPtr,
    pub out: DevPtr,
    pub in_dt: DType,
    pub out_dt: DType,
    pub alpha: f32,
    pub beta: f32,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_out: usize,
    pub bias: DevPtr,
}

impl Gemm {
    /// One product (batch of 1).
    #[allow(clippy::too_many_arguments)]
    pub fn single(
        out: DevPtr,
        a: DevPtr,
        b: DevPtr,
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        in_dt: DType,
        out_dt: DType,
        beta: f32,
    ) -> Self {
        Gemm {
            m,
            n,
            k,
            ta,
            tb,
            a,
            b,
            out,
            in_dt,
            out_dt,
            alpha: 1.0,
            beta,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_out: 0,
            bias: 0,
        }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch) as f64
    }
}

pub trait Device: Send + Sync {
    /// An owned allocation (freed on drop).
    type Mem: Send + Sync;
    fn name(&self) -> String;
    fn launcher(&self) -> &dyn Launcher;
    /// `bytes` of zeroed memory, 256-byte aligned on the GPU, 64 in the simulator.
    fn alloc(&self, bytes: usize) -> Result<Self::Mem>;
    fn ptr(&self, m: &Self::Mem) -> DevPtr;
    /// Copies `src` to `dst`; returns once `src` may be reused.
    ///
    /// # Safety
    /// `dst` must address `src.len()` writable bytes of this device's memory, allocated until the copy is
    /// done and not accessed concurrently by anything else.
    unsafe fn htod(&self, dst: DevPtr, src: &[u8]) -> Result<()>;
    /// Copies to the host after every queued operation; returns when `dst` holds the data.
    ///
    /// # Safety
    /// `src` must address `dst.len()` readable bytes of this device's memory.
    unsafe fn dtoh(&self, dst: &mut [u8], src: DevPtr) -> Result<()>;
    /// Copies `bytes` bytes from `src` to `dst` (the ranges may overlap in the simulator only).
    ///
    /// # Safety
    /// `src` and `dst` must each address `bytes` bytes of this device's memory (readable, resp. writable),
    /// allocated until the copy has completed in stream order.
    unsafe fn dtod(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()>;
    /// Sets `bytes` bytes at `dst` to zero.
    ///
    /// # Safety
    /// `dst` must address `bytes` writable bytes of this device's memory, allocated until the memset has
    /// completed in stream order.
    unsafe fn memset0(&self, dst: DevPtr, bytes: usize) -> Result<()>;
    /// Runs the products of `g`.
    ///
    /// # Safety
    /// Every pointer of `g` must address this device's memory holding the elements the product reads or
    /// writes (batch `i` at `i` strides; `bias`, if not 0, `n` elements of `out_dt`), allocated until the
    /// product has completed in stream order.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()>;
    /// Waits for everything queued (and surfaces asynchronous errors).
    fn synchronize(&self) -> Result<()>;
}

/// The kernels in the CPU simulator, on host memory. Its matrix products convert the stored inputs to f32,
/// multiply with the CPU engine's matmul (f32 accumulation) and round to the output type, which is what
/// cuBLASLt computes up to summation order.
#[derive(Default)]
pub struct SimDevice {
    pub launcher: SimLauncher,
    /// Bytes copied device to host so far (what a test asserts does not cross, such as logits).
    downloaded: AtomicU64,
}

impl SimDevice {
    /// Bytes copied device to host since the device was made.
    pub fn bytes_downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }
}

/// Reads `n` elements of type `dt` at host address `p` as f32.
///
/// # Safety
/// `p` must address `n` readable elements of `dt`.
unsafe fn read_f32(p: DevPtr, n: usize, dt: DType) -> Vec<f32> {
    match dt {
        DType::F32 => std::slice::from_raw_parts(p as *const f32, n).to_vec(),
        DType::BF16 => std::slice::from_raw_parts(p as *const bf16, n).iter().map(|x| x.to_f32()).collect(),
    }
}

/// # Safety
/// `p` must address `x.len()` writable elements of `dt`.
unsafe fn write_f32(p: DevPtr, x: &[f32], dt: DType) {
    match dt {
        DType::F32 => std::slice::from_raw_parts_mut(p as *mut f32, x.len()).copy_from_slice(x),
        DType::BF16 => std::slice::from_raw_parts_mut(p as *mut bf16, x.len())
            .iter_mut()
            .zip(x)
            .for_each(|(d, &s)| *d = bf16::from_f32(s)),
    }
}

impl Device for SimDevice {
    type Mem = SimBuf<u8>;
    fn name(&self) -> String {
        "cuda-sim (the CUDA kernels in the CPU simulator)".into()
    }
    fn launcher(&self) -> &dyn Launcher {
        &self.launcher
    }
    fn alloc(&self, bytes: usize) -> Result<SimBuf<u8>> {
        Ok(SimBuf::zeros(bytes))
    }
    fn ptr(&self, m: &SimBuf<u8>) -> DevPtr {
        m.ptr()
    }
    // The simulator's device pointers are host addresses: the callers' contracts (see the trait) make these
    // raw copies valid.
    unsafe fn htod(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len());
        Ok(())
    }
    unsafe fn dtoh(&self, dst: &mut [u8], src: DevPtr) -> Result<()> {
        self.downloaded.fetch_add(dst.len() as u64, Ordering::Relaxed);
        std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len());
        Ok(())
    }
    unsafe fn dtod(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        std::ptr::copy(src as *const u8, dst as *mut u8, bytes);
        Ok(())
    }
    unsafe fn memset0(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        std::ptr::write_bytes(dst as *mut u8, 0, bytes);
        Ok(())
    }
    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        // SAFETY: this function's contract, passed on.
        super::profile::host_timed(|| super::profile::gemm_name(g), || unsafe { self.gemm_now(g) })
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl SimDevice {
    /// The products of `g`, on the host.
    ///
    /// # Safety
    /// As [`Device::gemm`].
    unsafe fn gemm_now(&self, g: &Gemm) -> Result<()> {
        let (sa, sb, so) = (g.in_dt.size() as u64, g.in_dt.size() as u64, g.out_dt.size() as u64);
        for i in 0..g.batch as u64 {
            let (pa, pb, po) = (
                g.a + i * g.stride_a as u64 * sa,
                g.b + i * g.stride_b as u64 * sb,
                g.out + i * g.stride_out as u64 * so,
            );
            // SAFETY: the Gemm describes live buffers of these sizes (this function's contract).
            unsafe {
                let a = read_f32(pa, g.m * g.k, g.in_dt);
                let b = read_f32(pb, g.k * g.n, g.in_dt);
                let mut out = vec![0f32; g.m * g.n];
                crate::ops::matmul::matmul(&mut out, &a, &b, g.m, g.n, g.k, g.ta, g.tb, false);
                let old = if g.beta != 0.0 { read_f32(po, g.m * g.n, g.out_dt) } else { vec![0.0; g.m * g.n] };
                out.iter_mut().zip(&old).for_each(|(o, &c)| *o = g.alpha * *o + g.beta * c);
                if g.bias != 0 {
                    let bias = read_f32(g.bias, g.n, g.out_dt);
                    out.chunks_mut(g.n).for_each(|row| row.iter_mut().zip(&bias).for_each(|(o, b)| *o += b));
                }
                write_f32(po, &out, g.out_dt);
            }
        }
        Ok(())
    }
}
