//! The [`Device`] on an NVIDIA GPU: one context and stream (through cudarc's driver API, loaded at run
//! time), the kernels through [`CudaLauncher`], memory as `CudaSlice<u8>` from the stream-ordered pool (which
//! keeps freed memory), matrix products through [`Gemms`] (cuBLASLt, plain cuBLAS where it has no algorithm).

use super::cuda::CudaLauncher;
use super::cuda_gemm::{Gemms, WORKSPACE_BYTES};
use super::device::{Device, Gemm};
use super::launch::{DevPtr, Launcher};
use super::{profile, sync};
use anyhow::{anyhow, Result};
use cudarc::driver::{result as drv, sys, CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::ffi::c_void;
use std::sync::Arc;

pub struct CudaDevice {
    // Field order is drop order: cuBLASLt and the workspace go before the launcher's context.
    gemms: Gemms,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    launcher: CudaLauncher,
    gpu_name: String,
}

fn cu<T, E: std::fmt::Display>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("CUDA {what}: {e}"))
}

/// Stream-ordered allocations come from the device's memory pool, which by default hands freed memory back
/// to the driver at every synchronisation (release threshold 0), so each training step would allocate its
/// activations from the driver again. An unlimited threshold keeps it in the pool.
fn keep_pool_memory(ctx: &Arc<CudaContext>) -> Result<()> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let mut threshold = u64::MAX;
    // SAFETY: the device is this context's; RELEASE_THRESHOLD is a cuuint64_t.
    unsafe {
        let pool = cu("cuDeviceGetMemPool", drv::device::get_mem_pool(ctx.cu_device()))?;
        cu(
            "setting the memory pool's release threshold",
            drv::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut c_void,
            ),
        )
    }
}

impl CudaDevice {
    /// GPU `ordinal`; an error (never a panic) where there is none, no driver, or no kernels in this build.
    pub fn new(ordinal: usize) -> Result<Self> {
        let launcher = CudaLauncher::new(ordinal)?;
        // SAFETY: one stream only, so cudarc's cross-stream event tracking is not needed.
        unsafe { launcher.context().disable_event_tracking() };
        let stream = launcher.stream().clone();
        let gpu_name = launcher.context().name().unwrap_or_else(|_| "unknown GPU".into());
        keep_pool_memory(launcher.context())?;
        let gemms = Gemms::new()?;
        let workspace = cu("workspace", stream.alloc_zeros::<u8>(WORKSPACE_BYTES))?;
        Ok(CudaDevice { gemms, workspace, stream, launcher, gpu_name })
    }

    /// Makes this device's context current on the calling thread (the raw driver calls need it).
    fn bind(&self) -> Result<()> {
        cu("binding the context", self.launcher.context().bind_to_thread())
    }

    pub fn sm(&self) -> u32 {
        self.launcher.sm
    }

    /// Which kernel images were loaded (cubins for this architecture, or PTX compiled by the driver).
    pub fn kernels_loaded(&self) -> &str {
        &self.launcher.loaded
    }
}

impl Device for CudaDevice {
    type Mem = CudaSlice<u8>;
    fn name(&self) -> String {
        format!("cuda: {} (sm_{})", self.gpu_name, self.launcher.sm)
    }
    fn launcher(&self) -> &dyn Launcher {
        &self.launcher
    }
    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        cu(&format!("allocating {bytes} bytes"), self.stream.alloc_zeros::<u8>(bytes.max(16)))
    }
    fn ptr(&self, m: &CudaSlice<u8>) -> DevPtr {
        let (p, _sync) = m.device_ptr(&self.stream);
        p
    }
    // SAFETY (the copies and memset): the pointers address device memory of the sizes given, by the
    // trait's contract; the host slices are borrowed for the whole call (each copy to or from the host
    // synchronizes before returning).
    unsafe fn htod(&self, dst: DevPtr, src: &[u8]) -> Result<()> {
        self.bind()?;
        cu("copy to device", unsafe { drv::memcpy_htod_async(dst, src, self.stream.cu_stream()) })?;
        self.synchronize()
    }
    unsafe fn dtoh(&self, dst: &mut [u8], src: DevPtr) -> Result<()> {
        self.bind()?;
        cu("copy to host", unsafe { drv::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) })?;
        self.synchronize()
    }
    unsafe fn dtod(&self, dst: DevPtr, src: DevPtr, bytes: usize) -> Result<()> {
        self.bind()?;
        cu("device copy", unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) })
    }
    unsafe fn memset0(&self, dst: DevPtr, bytes: usize) -> Result<()> {
        self.bind()?;
        cu("memset", unsafe { drv::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) })
    }
    /// With `RLHF_CUDA_SYNC=1`, waits for the product (see [`super::sync`]); errors name its shapes.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        let ws = self.ptr(&self.workspace);
        // SAFETY: the caller's contract; the workspace and stream are this device's.
        let name = profile::gemm_name(g);
        let issued = self.launcher.timed(&name, || unsafe { self.gemms.run(g, self.stream.cu_stream() as _, ws) });
        let wait = || self.synchronize();
        sync::finish(|| sync::gemm_label(g), issued, sync::enabled().then_some(&wait as _))
    }
    fn synchronize(&self) -> Result<()> {
        cu("synchronize", self.stream.synchronize())
    }
}
