//! The real-device [`Launcher`]: the embedded cubins (or, on another architecture, the PTX) loaded once per process into a CUDA context (through the
//! driver API, via cudarc), kernels looked up by name and launched with cuLaunchKernel on one stream.
//!
//! Construction never panics on a machine without a GPU: it returns an error saying why (no PTX in this
//! build, no driver library, no device, no cubin or PTX for the device's architecture). Which image each
//! kernel file loaded from is in [`CudaLauncher::loaded`].

use super::launch::{Arg, LaunchConfig, Launcher};
use super::{image_for, ptx_entries, ptx_image, Image, CUBIN_MODULES, PTX_MODULES, PTX_UNAVAILABLE_REASON};
use super::{profile, sync};
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
    modules: Vec<Module>,
    /// Which of `modules` defines each kernel (from the `.entry` names of its file's PTX): a lookup asks
    /// only the module that has the kernel, so the driver reports no failed lookups (compute-sanitizer
    /// counts each one as an error).
    module_of: HashMap<&'static str, usize>,
    funcs: Mutex<HashMap<String, Func>>,
    /// Compute capability as 10 * major + minor (90 for an H100/H200).
    pub sm: u32,
    /// What was loaded, e.g. "sm_90 cubins (10 files)" or "PTX for sm_80, JIT-compiled for sm_86".
    pub loaded: String,
}

const DEFAULT_SMEM: u32 = 48 * 1024;

/// Loads one kernel image into the current context.
fn load(image: Image) -> Result<sys::CUmodule> {
    let r = match image {
        Image::Cubin { bytes, .. } => {
            // An 8-byte-aligned copy: the driver reads the ELF image in place.
            let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..bytes.len()].copy_from_slice(bytes);
            // SAFETY: a complete cubin image that outlives the call (the driver copies it).
            unsafe { result::module::load_data(aligned.as_ptr() as *const c_void) }
        }
        Image::Ptx { text, .. } => {
            let src = CString::new(text)?;
            // SAFETY: a NUL-terminated PTX image that outlives the call (the driver copies it).
            unsafe { result::module::load_data(src.as_ptr() as *const c_void) }
        }
    };
    r.map_err(|e| anyhow!("{e}"))
}

/// "10 x sm_90 cubin" or "9 x sm_90 cubin, 1 x sm_80 PTX (JIT; ...)": how many kernel files loaded each way.
fn summarize(loaded: &[String]) -> String {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for l in loaded {
        match kinds.iter_mut().find(|(k, _)| k == l) {
            Some((_, n)) => *n += 1,
            None => kinds.push((l, 1)),
        }
    }
    kinds.iter().map(|(k, n)| format!("{n} x {k}")).collect::<Vec<_>>().join(", ")
}

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
        let mut module_of = HashMap::new();
        let mut loaded: Vec<String> = Vec::new();
        for stem in stems {
            let image = image_for(CUBIN_MODULES, PTX_MODULES, stem, sm).ok_or_else(|| {
                anyhow!("no cubin or PTX of {stem}.cu for sm_{sm} or older (built for RLHF_CUDA_ARCHS)")
            })?;
            let (m, what) = match load(image) {
                Ok(m) => (m, image.describe()),
                // A cubin the driver refuses: the PTX still loads (JIT-compiled).
                Err(e) if matches!(image, Image::Cubin { .. }) => {
                    let ptx = ptx_image(PTX_MODULES, stem, sm).ok_or_else(|| anyhow!("{stem}.cu: {e}; no PTX"))?;
                    let m = load(ptx)
                        .map_err(|e2| anyhow!("loading {stem}.cu: {} refused ({e}), {e2}", image.describe()))?;
                    (m, format!("{} (JIT; the {} was refused: {e})", ptx.describe(), image.describe()))
                }
                Err(e) => bail!("loading {stem}.cu {} for sm_{sm}: {e}", image.describe()),
            };
            // Every architecture's PTX of a file defines the same kernels: the first one names them.
            let text = PTX_MODULES.iter().find(|(s, _, _)| *s == stem).map_or("", |(_, _, t)| *t);
            module_of.extend(ptx_entries(text).map(|name| (name, modules.len())));
            modules.push(Module(m));
            loaded.push(what);
        }
        let loaded = summarize(&loaded);
        let stream = ctx.default_stream();
        Ok(CudaLauncher { ctx, stream, modules, module_of, funcs: Mutex::new(HashMap::new()), sm, loaded })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn function(&self, name: &str) -> Result<Func> {
        let mut funcs = self.funcs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = funcs.get(name) {
            return Ok(*f);
        }
        let Some(&i) = self.module_of.get(name) else {
            bail!("no kernel named {name} in the loaded kernel files");
        };
        // SAFETY: the module is loaded (unloaded only on drop).
        let f = unsafe { result::module::get_function(self.modules[i].0, CString::new(name)?) }
            .map_err(|e| anyhow!("kernel {name}: {e}"))?;
        let func = Func { f, smem_limit: DEFAULT_SMEM };
        funcs.insert(name.to_string(), func);
        Ok(func)
    }

    /// `op` (work queued on this launcher's stream), bracketed by two events while [`profile`] records.
    pub fn timed(&self, name: &str, op: impl FnOnce() -> Result<()>) -> Result<()> {
        if !profile::recording() {
            return op();
        }
        let ev = || {
            self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| anyhow!("cuEventCreate: {e}"))
        };
        let (a, b) = (ev()?, ev()?);
        a.record(&self.stream).map_err(|e| anyhow!("cuEventRecord: {e}"))?;
        let r = op();
        b.record(&self.stream).map_err(|e| anyhow!("cuEventRecord: {e}"))?;
        profile::record(name, profile::Span::Events(a, b));
        r
    }

    /// Wait for every launched kernel; surfaces asynchronous launch errors.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| anyhow!("{e}"))
    }
}

impl Launcher for CudaLauncher {
    /// With `RLHF_CUDA_SYNC=1`, waits for the kernel (see [`super::sync`]); errors name it and its grid.
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        // SAFETY: this function's contract, passed on.
        let issued = self.timed(kernel, || unsafe { self.issue(kernel, cfg, args) });
        let wait = || self.synchronize();
        sync::finish(|| sync::launch_label(kernel, &cfg), issued, sync::enabled().then_some(&wait as _))
    }

    fn name(&self) -> &'static str {
        "cuda"
    }
}

impl CudaLauncher {
    /// Queues the launch (the function's contract is [`Launcher::launch`]'s).
    unsafe fn issue(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
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
            self.funcs.lock().unwrap_or_else(|e| e.into_inner()).insert(kernel.to_string(), func);
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
        .map_err(|e| anyhow!("cuLaunchKernel: {e}"))
    }
}

impl Drop for CudaLauncher {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        for m in self.modules.drain(..) {
            // SAFETY: each module is unloaded once, after the stream has drained.
            let _ = unsafe { result::module::unload(m.0) };
        }
    }
}
