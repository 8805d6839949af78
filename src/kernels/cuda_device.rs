//! The [`Device`] on an NVIDIA GPU: one context and stream (through cudarc's driver API, loaded at run
//! time), the kernels through [`CudaLauncher`], memory as `CudaSlice<u8>`, matrix products through
//! cuBLASLt with f32 accumulation (and the bias added in its epilogue) (`CUBLAS_COMPUTE_32F`: bf16 inputs use the tensor cores; f32 inputs are
//! true f32, never TF32, so the f32 engine can be checked tightly against the CPU).
//!
//! Row-major products are handed to cuBLASLt (column-major) as the transposed product:
//! out^T [N,M] = op(b)^T [N,K] * op(a)^T [K,M], so cuBLASLt's "A" is our b and its "B" our a.

use super::cuda::CudaLauncher;
use super::device::{Device, Gemm};
use super::launch::{DType, DevPtr, Launcher};
use anyhow::{anyhow, Result};
use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::{result as drv, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

/// cuBLASLt workspace (the size NVIDIA recommends for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// The shape-and-type key of a product, for the cache of chosen algorithms.
type GemmKey = (usize, usize, usize, bool, bool, DType, DType, usize, bool, bool);

struct Lt {
    handle: ltsys::cublasLtHandle_t,
    algos: Mutex<HashMap<GemmKey, ltsys::cublasLtMatmulAlgo_t>>,
}
// SAFETY: the handle is used from one stream at a time (every call goes through &CudaDevice on its stream);
// cuBLASLt handles may be shared between threads.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created once in CudaDevice::new, destroyed once here.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

pub struct CudaDevice {
    // Field order is drop order: cuBLASLt and the workspace go before the launcher's context.
    lt: Lt,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    launcher: CudaLauncher,
    gpu_name: String,
}

fn cu<T, E: std::fmt::Display>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("CUDA {what}: {e}"))
}

fn lt_type(dt: DType) -> ltsys::cudaDataType {
    match dt {
        DType::F32 => ltsys::cudaDataType::CUDA_R_32F,
        DType::BF16 => ltsys::cudaDataType::CUDA_R_16BF,
    }
}

/// A column-major layout descriptor, destroyed on drop.
struct Layout(ltsys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(dt: DType, rows: usize, cols: usize, batch: usize, stride: usize) -> Result<Self> {
        let l = Layout(cu(
            "cublasLtMatrixLayoutCreate",
            lt::create_matrix_layout(lt_type(dt), rows as u64, cols as u64, rows as i64),
        )?);
        if batch > 1 {
            let (count, stride) = (batch as i32, stride as i64);
            // SAFETY: l.0 is live; the attribute values have the types cuBLASLt documents (int32, int64).
            unsafe {
                cu(
                    "batch count",
                    lt::set_matrix_layout_attribute(
                        l.0,
                        ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        &count as *const i32 as *const c_void,
                        4,
                    ),
                )?;
                cu(
                    "batch stride",
                    lt::set_matrix_layout_attribute(
                        l.0,
                        ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                        &stride as *const i64 as *const c_void,
                        8,
                    ),
                )?;
            }
        }
        Ok(l)
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created in Layout::new, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

struct Desc(ltsys::cublasLtMatmulDesc_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
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
        // SAFETY: only tries to dlopen the library (cudarc would panic on first use if it were missing).
        if !unsafe { ltsys::is_culib_present() } {
            anyhow::bail!("cuBLASLt could not be loaded: put the CUDA 13 libcublasLt.so.13 (CUDA toolkit, or the nvidia-cublas wheel) on LD_LIBRARY_PATH");
        }
        let handle = cu("cuBLASLt (is libcublasLt on the library path?)", lt::create_handle())?;
        let workspace = cu("workspace", stream.alloc_zeros::<u8>(WORKSPACE_BYTES))?;
        Ok(CudaDevice { lt: Lt { handle, algos: Mutex::new(HashMap::new()) }, workspace, stream, launcher, gpu_name })
    }

    /// Makes this device's context current on the calling thread (the raw driver calls need it).
    fn bind(&self) -> Result<()> {
        cu("binding the context", self.launcher.context().bind_to_thread())
    }

    pub fn sm(&self) -> u32 {
        self.launcher.sm
    }

    /// The fastest algorithm cuBLASLt proposes for this shape, cached per shape.
    fn algo(
        &self,
        key: GemmKey,
        desc: &Desc,
        a: &Layout,
        b: &Layout,
        c: &Layout,
    ) -> Result<ltsys::cublasLtMatmulAlgo_t> {
        if let Some(a) = self.lt.algos.lock().unwrap().get(&key) {
            return Ok(*a);
        }
        let pref = cu("preference", lt::create_matmul_pref())?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: all descriptors are live; the workspace attribute is a uint64.
        let found = unsafe {
            let r = lt::set_matmul_pref_attribute(
                pref,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
            .and_then(|_| lt::get_matmul_algo_heuristic(self.lt.handle, desc.0, a.0, b.0, c.0, c.0, pref));
            let _ = lt::destroy_matmul_pref(pref);
            r
        };
        let algo = cu(&format!("no cuBLASLt algorithm for {key:?}"), found)?.algo;
        self.lt.algos.lock().unwrap().insert(key, algo);
        Ok(algo)
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
    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        let desc = Desc(cu(
            "cublasLtMatmulDescCreate",
            lt::create_matmul_desc(ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F, ltsys::cudaDataType::CUDA_R_32F),
        )?);
        let (ta, tb) = (g.ta as i32, g.tb as i32);
        // SAFETY: desc is live; TRANSA/TRANSB are int32 cublasOperation_t values (0 = N, 1 = T).
        unsafe {
            cu(
                "TRANSA",
                lt::set_matmul_desc_attribute(
                    desc.0,
                    ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                    &tb as *const i32 as *const c_void,
                    4,
                ),
            )?;
            cu(
                "TRANSB",
                lt::set_matmul_desc_attribute(
                    desc.0,
                    ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                    &ta as *const i32 as *const c_void,
                    4,
                ),
            )?;
        }
        if g.bias != 0 {
            // D's rows (column-major out^T [N, M]) are our output features: a bias of N elements, our type.
            let (epi, ptr, ty) = (ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS, g.bias, lt_type(g.out_dt));
            // SAFETY: desc is live; EPILOGUE is a uint32 enum, BIAS_POINTER a device pointer, BIAS_DATA_TYPE an int32.
            unsafe {
                cu(
                    "EPILOGUE",
                    lt::set_matmul_desc_attribute(
                        desc.0,
                        ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                        &epi as *const _ as *const c_void,
                        4,
                    ),
                )?;
                cu(
                    "BIAS_POINTER",
                    lt::set_matmul_desc_attribute(
                        desc.0,
                        ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                        &ptr as *const u64 as *const c_void,
                        8,
                    ),
                )?;
                cu(
                    "BIAS_DATA_TYPE",
                    lt::set_matmul_desc_attribute(
                        desc.0,
                        ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                        &ty as *const _ as *const c_void,
                        4,
                    ),
                )?;
            }
        }
        // cuBLASLt's A = our b as stored, its B = our a as stored, its C = D = out^T [N,M].
        let la = if g.tb {
            Layout::new(g.in_dt, g.k, g.n, g.batch, g.stride_b)?
        } else {
            Layout::new(g.in_dt, g.n, g.k, g.batch, g.stride_b)?
        };
        let lb = if g.ta {
            Layout::new(g.in_dt, g.m, g.k, g.batch, g.stride_a)?
        } else {
            Layout::new(g.in_dt, g.k, g.m, g.batch, g.stride_a)?
        };
        let lc = Layout::new(g.out_dt, g.n, g.m, g.batch, g.stride_out)?;
        let key = (g.m, g.n, g.k, g.ta, g.tb, g.in_dt, g.out_dt, g.batch, g.beta != 0.0, g.bias != 0);
        let algo = self.algo(key, &desc, &la, &lb, &lc)?;
        let ws = self.ptr(&self.workspace);
        // SAFETY: the Gemm describes live device buffers of these shapes (the caller's contract); alpha and
        // beta are f32 (the scale type); C and D are the same matrix, which cuBLASLt allows.
        let r = unsafe {
            lt::matmul(
                self.lt.handle,
                desc.0,
                &g.alpha as *const f32 as *const c_void,
                &g.beta as *const f32 as *const c_void,
                g.b as *const c_void,
                la.0,
                g.a as *const c_void,
                lb.0,
                g.out as *const c_void,
                lc.0,
                g.out as *mut c_void,
                lc.0,
                &algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                self.stream.cu_stream() as ltsys::cudaStream_t,
            )
        };
        r.map_err(|e| anyhow!("cuBLASLt matmul {}x{}x{} (batch {}): {e:?}", g.m, g.n, g.k, g.batch))
    }
    fn synchronize(&self) -> Result<()> {
        cu("synchronize", self.stream.synchronize())
    }
}
