//! The real-device [`Launcher`]: the embedded PTX loaded once per process into a CUDA context (through the
//! driver API, via cudarc), kernels looked up by name and launched with cuLaunchKernel on one stream.
//!
//! Construction never panics on a machine without a GPU: it returns an error saying why (no PTX in this
//! build, no driver library, no device, no PTX for the device's architecture).

use super::launch::{Arg, LaunchConfig, Launcher};
use super::{ptx_for, PTX_MODULES, PTX_UNAVAILABLE_REASON};
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{result, sys, CudaContext, CudaStream};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy)]
struct Func {
    f: sys::CUfunction,
    smem_limit: u32,
}
// SAFETY: CUfunction handles are plain driver handles, usable from any thread with the context bound.
unsafe impl Send for Func {}

struct Module(sys::CUmodule);
// SAFETY: as above (module handles).
unsafe impl Send for Module {}
unsafe impl Sync for Module {}

pub struct CudaLauncher {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Vec<(String, Module)>,
    funcs: Mutex<HashMap<String, Func>>,
    /// Compute capability as 10 * major + minor (90 for an H100/H200).
    pub sm: u32,
}

const DEFAULT_SMEM: u32 = 48 * 1024;

impl CudaLauncher {
    /// Open device `ordinal` and load every kernel module for its architecture.
    pub fn new(ordinal: usize) -> Result<Self> {
        if let Some(why) = PTX_UNAVAILABLE_REASON {
            bail!("CUDA kernels are not in this build: {why}");
        }
        // SAFETY: only tries to dlopen the driver library.
        if !unsafe { sys::is_culib_present() } {
            bail!("no CUDA driver: libcuda.so could not be loaded on this machine");
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("CUDA device {ordinal} unavailable: {e}"))?;
        let (maj, min) = ctx.compute_capability().map_err(|e| anyhow!("compute capability: {e}"))?;
        let sm = (maj * 10 + min) as u32;
        ctx.bind_to_thread().map_err(|e| anyhow!("{e}"))?;
        let mut stems: Vec<&str> = PTX_MODULES.iter().map(|(s, _, _)| *s).collect();
        stems.dedup();
        let mut modules = Vec::new();
        for stem in stems {
            let ptx = ptx_for(stem, sm)
                .ok_or_else(|| anyhow!("no PTX of {stem}.cu for sm_{sm} or older (built for RLHF_CUDA_ARCHS)"))?;
            let src = CString::new(ptx)?;
            // SAFETY: src is a NUL-terminated PTX image that outlives the call (the driver copies it).
            let m = unsafe { result::module::load_data(src.as_ptr() as *const c_void) }
                .map_err(|e| anyhow!("loading {stem}.cu PTX for sm_{sm}: {e}"))?;
            modules.push((stem.to_string(), Module(m)));
        }
        let stream = ctx.default_stream();
        Ok(CudaLauncher { ctx, stream, modules, funcs: Mutex::new(HashMap::new()), sm })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn function(&self, name: &str) -> Result<Func> {
        let mut funcs = self.funcs.lock().unwrap();
        if let Some(f) = funcs.get(name) {
            return Ok(*f);
        }
        for (_, m) in &self.modules {
            // SAFETY: m is a loaded module (unloaded only on drop).
            if let Ok(f) = unsafe { result::module::get_function(m.0, CString::new(name)?) } {
                let func = Func { f, smem_limit: DEFAULT_SMEM };
                funcs.insert(name.to_string(), func);
                return Ok(func);
            }
        }
        bail!("no kernel named {name} in the loaded PTX modules")
    }

    /// Wait for every launched kernel; surfaces asynchronous launch errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| anyhow!("{e}"))
    }
}

impl Launcher for CudaLauncher {
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("{e}"))?;
        let mut func = self.function(kernel)?;
        if cfg.smem > func.smem_limit {
            // SAFETY: func.f is a live function handle.
            unsafe {
                result::function::set_function_attribute(
                    func.f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.smem as i32,
                )
            }
            .map_err(|e| anyhow!("{kernel}: raising dynamic shared memory to {} bytes: {e}", cfg.smem))?;
            func.smem_limit = cfg.smem;
            self.funcs.lock().unwrap().insert(kernel.to_string(), func);
        }
        let mut params: Vec<*mut c_void> = args.iter().map(|a| a.value_ptr()).collect();
        // SAFETY: params point at values that live for the call and match the kernel's parameter list, and the
        // device pointers among them are valid for the kernel's accesses: both by this function's contract
        // (`Launcher::launch`).
        unsafe {
            result::launch_kernel(
                func.f,
                (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
                (cfg.block[0], cfg.block[1], cfg.block[2]),
                cfg.smem,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| anyhow!("launching {kernel}: {e}"))
    }

    fn name(&self) -> &'static str {
        "cuda"
    }
}

impl Drop for CudaLauncher {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        for (_, m) in self.modules.drain(..) {
            // SAFETY: each module is unloaded once, after the stream has drained.
            let _ = unsafe { result::module::unload(m.0) };
        }
    }
}
