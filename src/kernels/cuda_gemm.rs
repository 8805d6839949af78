//! Matrix products on the GPU: cuBLASLt with f32 accumulation and the bias in its epilogue
//! (`CUBLAS_COMPUTE_32F`: bf16 inputs use the tensor cores; f32 inputs are true f32, never TF32, so the f32
//! engine can be checked tightly against the CPU), and plain cuBLAS (`cublasGemmStridedBatchedEx`, the same
//! compute type) for a shape for which cuBLASLt proposes no algorithm.
//!
//! Row-major products are handed to the column-major libraries as the transposed product:
//! out^T [N,M] = op(b)^T [N,K] * op(a)^T [K,M], so the libraries' "A" is our b and their "B" our a.
//!
//! Every shape gets a [`Plan`] once (descriptor, the three layouts, the algorithm or the cuBLAS route),
//! kept for the process: a training step repeats the same few dozen shapes.

use super::device::Gemm;
use super::launch::{DType, DevPtr};
use anyhow::{anyhow, bail, Result};
use cudarc::cublas::{result as blas, sys as blassys};
use cudarc::cublaslt::{result as lt, sys as ltsys};
use std::collections::hash_map::{Entry, HashMap};
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

/// cuBLASLt workspace (the size NVIDIA recommends for Hopper).
pub const WORKSPACE_BYTES: usize = 32 << 20;

fn cu<T, E: std::fmt::Debug>(what: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("{what}: {e:?}"))
}

fn lt_type(dt: DType) -> ltsys::cudaDataType {
    match dt {
        DType::F32 => ltsys::cudaDataType::CUDA_R_32F,
        DType::BF16 => ltsys::cudaDataType::CUDA_R_16BF,
    }
}

fn blas_type(dt: DType) -> blassys::cudaDataType {
    match dt {
        DType::F32 => blassys::cudaDataType::CUDA_R_32F,
        DType::BF16 => blassys::cudaDataType::CUDA_R_16BF,
    }
}

/// Everything of a [`Gemm`] but its pointers: what a [`Plan`] depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Shape {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    in_dt: DType,
    out_dt: DType,
    batch: usize,
    strides: [usize; 3],
    beta: bool,
    bias: bool,
}

impl Shape {
    fn of(g: &Gemm) -> Self {
        Shape {
            m: g.m,
            n: g.n,
            k: g.k,
            ta: g.ta,
            tb: g.tb,
            in_dt: g.in_dt,
            out_dt: g.out_dt,
            batch: g.batch,
            strides: [g.stride_a, g.stride_b, g.stride_out],
            beta: g.beta != 0.0,
            bias: g.bias != 0,
        }
    }
    /// Leading dimensions of the libraries' A (our b), B (our a) and C (our out), column-major.
    fn lds(&self) -> [usize; 3] {
        [if self.tb { self.k } else { self.n }, if self.ta { self.m } else { self.k }, self.n]
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
            use ltsys::cublasLtMatrixLayoutAttribute_t as A;
            // SAFETY: l is live; the attribute values have the types cuBLASLt documents (int32, int64).
            unsafe {
                set_layout(&l, A::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &(batch as i32), "batch count")?;
                set_layout(&l, A::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &(stride as i64), "batch stride")?;
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

/// Sets one layout attribute from a value of its documented type.
///
/// # Safety
/// `l` must be live and `T` the attribute's type.
unsafe fn set_layout<T>(l: &Layout, attr: ltsys::cublasLtMatrixLayoutAttribute_t, v: &T, what: &str) -> Result<()> {
    cu(what, unsafe {
        lt::set_matrix_layout_attribute(l.0, attr, v as *const T as *const c_void, std::mem::size_of::<T>())
    })
}

/// Sets one matmul-descriptor attribute from a value of its documented type.
///
/// # Safety
/// `d` must be live and `T` the attribute's type.
unsafe fn set_desc<T>(d: &Desc, attr: ltsys::cublasLtMatmulDescAttributes_t, v: &T, what: &str) -> Result<()> {
    cu(what, unsafe {
        lt::set_matmul_desc_attribute(d.0, attr, v as *const T as *const c_void, std::mem::size_of::<T>())
    })
}

/// How a shape is computed.
enum Route {
    Lt(ltsys::cublasLtMatmulAlgo_t),
    /// cuBLASLt proposed no algorithm (the reason kept for the note): plain cuBLAS.
    Blas,
}

/// One shape's cuBLASLt objects.
struct Plan {
    desc: Desc,
    la: Layout,
    lb: Layout,
    lc: Layout,
    route: Route,
}

// SAFETY: the descriptors and algorithms are plain host-side cuBLASLt objects; every use is under the
// `Gemms::plans` mutex.
unsafe impl Send for Plan {}

struct BlasHandle(blassys::cublasHandle_t);
// SAFETY: used under the plans mutex only (see Plan).
unsafe impl Send for BlasHandle {}
unsafe impl Sync for BlasHandle {}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // SAFETY: created once in Gemms::blas, destroyed once here.
        let _ = unsafe { blas::destroy_handle(self.0) };
    }
}

/// The libraries' handles and the plans of every shape seen.
pub struct Gemms {
    handle: ltsys::cublasLtHandle_t,
    plans: Mutex<HashMap<Shape, Plan>>,
    /// Created on the first shape that needs it (libcublas is loaded only then).
    blas: OnceLock<std::result::Result<BlasHandle, String>>,
}

// SAFETY: the cuBLASLt handle may be shared between threads; every call through it is on the device's one
// stream, under the plans mutex.
unsafe impl Send for Gemms {}
unsafe impl Sync for Gemms {}

impl Drop for Gemms {
    fn drop(&mut self) {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // SAFETY: created once in Gemms::new, destroyed once here, after the plans made with it.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

impl Gemms {
    pub fn new() -> Result<Self> {
        // SAFETY: only tries to dlopen the library (cudarc would panic on first use if it were missing).
        if !unsafe { ltsys::is_culib_present() } {
            bail!("cuBLASLt could not be loaded: put the CUDA 13 libcublasLt.so.13 (CUDA toolkit, or the nvidia-cublas wheel) on LD_LIBRARY_PATH");
        }
        let handle = cu("cublasLtCreate (is libcublasLt on the library path?)", lt::create_handle())?;
        Ok(Gemms { handle, plans: Mutex::new(HashMap::new()), blas: OnceLock::new() })
    }

    /// The plan of `s`: descriptor, layouts, and the fastest algorithm cuBLASLt proposes; an error only
    /// where it proposes none for a product with a bias epilogue (the caller adds the bias separately).
    fn plan(&self, s: &Shape) -> Result<Plan> {
        let desc = Desc(cu(
            "cublasLtMatmulDescCreate",
            lt::create_matmul_desc(ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F, ltsys::cudaDataType::CUDA_R_32F),
        )?);
        use ltsys::cublasLtMatmulDescAttributes_t as A;
        // SAFETY: desc is live; TRANSA/TRANSB are int32 cublasOperation_t values (0 = N, 1 = T), EPILOGUE a
        // uint32 enum, BIAS_DATA_TYPE an int32 enum.
        unsafe {
            set_desc(&desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &(s.tb as i32), "TRANSA")?;
            set_desc(&desc, A::CUBLASLT_MATMUL_DESC_TRANSB, &(s.ta as i32), "TRANSB")?;
            if s.bias {
                // D's rows (column-major out^T [N, M]) are our output features: a bias of N elements, our type.
                set_desc(
                    &desc,
                    A::CUBLASLT_MATMUL_DESC_EPILOGUE,
                    &ltsys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
                    "EPILOGUE",
                )?;
                set_desc(&desc, A::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &lt_type(s.out_dt), "BIAS_DATA_TYPE")?;
            }
        }
        let [lda, ldb, ldc] = s.lds();
        let la = Layout::new(s.in_dt, lda, if s.tb { s.n } else { s.k }, s.batch, s.strides[1])?;
        let lb = Layout::new(s.in_dt, ldb, if s.ta { s.k } else { s.m }, s.batch, s.strides[0])?;
        let lc = Layout::new(s.out_dt, ldc, s.m, s.batch, s.strides[2])?;
        let route = match self.heuristic(&desc, &la, &lb, &lc) {
            Ok(algo) => Route::Lt(algo),
            Err(e) if s.bias => bail!("cuBLASLt has no algorithm with a bias epilogue: {e:#}"),
            Err(e) => {
                eprintln!("note: cuBLASLt has no algorithm for {s:?} ({e:#}); using plain cuBLAS for it");
                Route::Blas
            }
        };
        Ok(Plan { desc, la, lb, lc, route })
    }

    fn heuristic(&self, desc: &Desc, a: &Layout, b: &Layout, c: &Layout) -> Result<ltsys::cublasLtMatmulAlgo_t> {
        let pref = cu("cublasLtMatmulPreferenceCreate", lt::create_matmul_pref())?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: all descriptors are live; the workspace attribute is a uint64; pref is destroyed once.
        let found = unsafe {
            let r = lt::set_matmul_pref_attribute(
                pref,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
            .and_then(|_| lt::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, c.0, c.0, pref));
            let _ = lt::destroy_matmul_pref(pref);
            r
        };
        Ok(cu("cublasLtMatmulAlgoGetHeuristic", found)?.algo)
    }

    fn blas(&self, stream: ltsys::cudaStream_t) -> Result<blassys::cublasHandle_t> {
        let h = self.blas.get_or_init(|| {
            // SAFETY: only tries to dlopen the library.
            if !unsafe { blassys::is_culib_present() } {
                return Err("libcublas could not be loaded (it ships beside libcublasLt)".into());
            }
            blas::create_handle().map(BlasHandle).map_err(|e| format!("cublasCreate: {e:?}"))
        });
        let h = h.as_ref().map_err(|e| anyhow!("plain cuBLAS fallback: {e}"))?.0;
        // SAFETY: h is live; the stream is the device's (valid while the device is).
        cu("cublasSetStream", unsafe { blas::set_stream(h, stream as blassys::cudaStream_t) })?;
        Ok(h)
    }

    /// Runs `g` on `stream` with `workspace` ([`WORKSPACE_BYTES`] of device memory).
    ///
    /// # Safety
    /// As [`super::device::Device::gemm`]; `stream` and `workspace` belong to the device these handles were
    /// made on.
    pub unsafe fn run(&self, g: &Gemm, stream: ltsys::cudaStream_t, workspace: DevPtr) -> Result<()> {
        let s = Shape::of(g);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let p = match plans.entry(s) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.plan(&s)?),
        };
        match &p.route {
            Route::Lt(algo) => {
                if s.bias {
                    // SAFETY: p.desc is live; BIAS_POINTER is a device pointer (read at the matmul call).
                    unsafe {
                        set_desc(
                            &p.desc,
                            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                            &g.bias,
                            "BIAS_POINTER",
                        )?
                    };
                }
                // SAFETY: the Gemm describes live device buffers of these shapes (the caller's contract); alpha
                // and beta are f32 (the scale type); C and D are the same matrix, which cuBLASLt allows.
                cu("cublasLtMatmul", unsafe {
                    lt::matmul(
                        self.handle,
                        p.desc.0,
                        &g.alpha as *const f32 as *const c_void,
                        &g.beta as *const f32 as *const c_void,
                        g.b as *const c_void,
                        p.la.0,
                        g.a as *const c_void,
                        p.lb.0,
                        g.out as *const c_void,
                        p.lc.0,
                        g.out as *mut c_void,
                        p.lc.0,
                        algo,
                        workspace as *mut c_void,
                        WORKSPACE_BYTES,
                        stream,
                    )
                })
            }
            Route::Blas => {
                let h = self.blas(stream)?;
                let [lda, ldb, ldc] = s.lds();
                let op = |t: bool| {
                    if t {
                        blassys::cublasOperation_t::CUBLAS_OP_T
                    } else {
                        blassys::cublasOperation_t::CUBLAS_OP_N
                    }
                };
                // SAFETY: as above; the leading dimensions and strides are those of the layouts of the Lt route.
                cu("cublasGemmStridedBatchedEx", unsafe {
                    blas::gemm_strided_batched_ex(
                        h,
                        op(s.tb),
                        op(s.ta),
                        s.n as i32,
                        s.m as i32,
                        s.k as i32,
                        &g.alpha as *const f32 as *const c_void,
                        g.b as *const c_void,
                        blas_type(s.in_dt),
                        lda as i32,
                        g.stride_b as i64,
                        g.a as *const c_void,
                        blas_type(s.in_dt),
                        ldb as i32,
                        g.stride_a as i64,
                        &g.beta as *const f32 as *const c_void,
                        g.out as *mut c_void,
                        blas_type(s.out_dt),
                        ldc as i32,
                        g.stride_out as i64,
                        s.batch as i32,
                        blassys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        blassys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(ta: bool, tb: bool) -> Shape {
        Shape::of(&Gemm::single(0, 0, 0, 5, 1, 3, ta, tb, DType::F32, DType::F32, 0.0))
    }

    /// Leading dimension and the other extent of each operand: what both routes describe the matrices with.
    #[test]
    fn leading_dimensions_follow_the_transposes() {
        // A (our b): [K,N] row-major is column-major N x K (ld N); stored [N,K] when tb (ld K).
        assert_eq!(shape(false, false).lds(), [1, 3, 1]);
        assert_eq!(shape(false, true).lds(), [3, 3, 1]);
        // B (our a): [M,K] row-major is column-major K x M (ld K); stored [K,M] when ta (ld M).
        assert_eq!(shape(true, false).lds(), [1, 5, 1]);
    }
}
