//! The CPU simulator of the CUDA kernels: the `.cu` files compiled as C++ against `kernels/sim/cuda_sim.h`
//! (see build.rs). "Device memory" is host memory: a [`DevPtr`] is a host address, e.g. of a [`SimBuf`].
//!
//! Race-detection mode runs blocks in a random order, resumes a block's threads in a random order at every
//! barrier pass and lets one warp run several warp-level steps ahead of the others, so a missing
//! `__syncthreads`/`__syncwarp` changes results; enable it per launcher ([`SimLauncher::racy`]) or for the
//! default launcher with `RLHF_SIM_RACE=1` (seed `RLHF_SIM_SEED`).
//!
//! The race checker (on by default; off with `RLHF_SIM_RACECHECK=0` or [`SimLauncher::without_racecheck`])
//! records the last writer and the readers of every shared-memory byte with the barrier epochs that order them
//! and fails the launch on a hazard (an unordered conflicting access by another thread of the block), naming
//! the kernel, both threads, the address and both source lines. See `kernels/README.md`.

use super::launch::{Arg, DevPtr, LaunchConfig, Launcher};
use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;

extern "C" {
    fn rlhf_sim_launch(
        name: *const c_char,
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        smem: u32,
        args: *mut *mut c_void,
        race: c_int,
        seed: u64,
        workers: c_int,
        check: c_int,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn rlhf_sim_kernel_count() -> c_int;
    fn rlhf_sim_kernel_name(i: c_int) -> *const c_char;
    fn rlhf_sim_has_kernel(name: *const c_char) -> c_int;
}

/// Every kernel compiled into the simulator, by its `extern "C"` name, sorted.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the registry is filled by static constructors before main and never changes afterwards.
    unsafe {
        (0..rlhf_sim_kernel_count())
            .map(|i| CStr::from_ptr(rlhf_sim_kernel_name(i)).to_string_lossy().into_owned())
            .collect()
    }
}

pub fn has_kernel(name: &str) -> bool {
    let c = CString::new(name).unwrap();
    // SAFETY: read-only lookup with a valid C string.
    unsafe { rlhf_sim_has_kernel(c.as_ptr()) != 0 }
}

/// Launches kernels in the simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimLauncher {
    /// None: race mode from the environment (RLHF_SIM_RACE); Some(seed): race mode on with this seed.
    race: Option<Option<u64>>,
    /// OS threads running blocks (0 = RLHF_SIM_THREADS or all cores).
    pub workers: i32,
    /// None: race checker from the environment (on unless RLHF_SIM_RACECHECK=0); Some(on).
    racecheck: Option<bool>,
}

impl SimLauncher {
    /// Race mode as the environment says (off unless RLHF_SIM_RACE=1).
    pub fn new() -> Self {
        Self::default()
    }
    /// Deterministic schedule: blocks and threads in index order, whatever the environment says.
    pub fn ordered() -> Self {
        SimLauncher { race: Some(None), workers: 0, racecheck: None }
    }
    /// Race-detection mode with `seed`: random block order and random thread resumption order.
    pub fn racy(seed: u64) -> Self {
        SimLauncher { race: Some(Some(seed)), workers: 0, racecheck: None }
    }
    /// The same launcher without the race checker: for tests that want a planted race's wrong numbers rather
    /// than its hazard report.
    pub fn without_racecheck(self) -> Self {
        SimLauncher { racecheck: Some(false), ..self }
    }
    /// The same launcher with the race checker on, whatever the environment says.
    pub fn with_racecheck(self) -> Self {
        SimLauncher { racecheck: Some(true), ..self }
    }
}

impl Launcher for SimLauncher {
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let name = CString::new(kernel)?;
        let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.value_ptr()).collect();
        let mut err = vec![0 as c_char; 4096];
        let (race, seed) = match self.race {
            None => (-1, 0),
            Some(None) => (0, 0),
            Some(Some(s)) => (1, s),
        };
        // SAFETY: the kernel reads its parameters through `ptrs` (alive for the call) and dereferences the
        // device pointers among them, which this function's contract (`Launcher::launch`) makes valid host
        // buffers of the sizes the kernel accesses; `err` has `err.len()` writable bytes.
        let rc = unsafe {
            rlhf_sim_launch(
                name.as_ptr(),
                cfg.grid[0],
                cfg.grid[1],
                cfg.grid[2],
                cfg.block[0],
                cfg.block[1],
                cfg.block[2],
                cfg.smem,
                ptrs.as_mut_ptr(),
                race,
                seed,
                self.workers,
                match self.racecheck {
                    None => -1,
                    Some(false) => 0,
                    Some(true) => 1,
                },
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the simulator wrote a NUL-terminated message into `err`.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
            bail!("simulated launch of {kernel} failed: {msg}");
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}

/// A 64-byte-aligned host buffer standing in for device memory in the simulator.
pub struct SimBuf<T: bytemuck::Pod> {
    ptr: *mut u8,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: SimBuf owns its allocation like a Vec.
unsafe impl<T: bytemuck::Pod + Send> Send for SimBuf<T> {}
unsafe impl<T: bytemuck::Pod + Sync> Sync for SimBuf<T> {}

impl<T: bytemuck::Pod> SimBuf<T> {
    fn layout(len: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align((len * std::mem::size_of::<T>()).max(64), 64).unwrap()
    }
    pub fn zeros(len: usize) -> Self {
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        assert!(!ptr.is_null(), "SimBuf allocation failed");
        SimBuf { ptr, len, _t: PhantomData }
    }
    pub fn from_slice(x: &[T]) -> Self {
        let mut b = Self::zeros(x.len());
        b.as_mut_slice().copy_from_slice(x);
        b
    }
    /// Every byte set to `byte` (0xff: NaN for f32/bf16), to catch outputs a kernel forgot to write.
    pub fn poisoned(len: usize, byte: u8) -> Self {
        let b = Self::zeros(len);
        // SAFETY: the allocation holds at least len * size_of::<T>() bytes.
        unsafe { std::ptr::write_bytes(b.ptr, byte, len * std::mem::size_of::<T>()) };
        b
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The "device pointer" kernels receive.
    pub fn ptr(&self) -> DevPtr {
        self.ptr as DevPtr
    }
    /// The pointer `off` elements in.
    pub fn ptr_at(&self, off: usize) -> DevPtr {
        assert!(off <= self.len);
        self.ptr as DevPtr + (off * std::mem::size_of::<T>()) as DevPtr
    }
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the allocation is aligned for T and holds len initialised (Pod) elements.
        unsafe { std::slice::from_raw_parts(self.ptr as *const T, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut T, self.len) }
    }
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }
}

impl<T: bytemuck::Pod> Drop for SimBuf<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in zeros() with the same layout.
        unsafe { std::alloc::dealloc(self.ptr, Self::layout(self.len)) }
    }
}
