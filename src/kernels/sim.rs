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
//!
//! The kernels are those linked into this binary, unless `RLHF_SIM_KERNELS` names a shared object holding a
//! whole simulator library of its own (runtime and kernels, the same C entry points): then every launch goes
//! to that library, loaded on first use. `tools/kernel-mutants.py` uses it to run the already built test
//! binaries on mutated kernels without rebuilding the crate.

use super::launch::{Arg, DevPtr, LaunchConfig, Launcher};
use anyhow::{bail, Result};
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::sync::{Mutex, OnceLock};

type LaunchFn = unsafe extern "C" fn(
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
type CountFn = unsafe extern "C" fn() -> c_int;
type NameFn = unsafe extern "C" fn(i: c_int) -> *const c_char;
type HasFn = unsafe extern "C" fn(name: *const c_char) -> c_int;

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

/// The simulator's C entry points: those linked into this binary, or those of the library `RLHF_SIM_KERNELS`
/// names.
struct Api {
    launch: LaunchFn,
    count: CountFn,
    name: NameFn,
    has: HasFn,
}

fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| match std::env::var_os("RLHF_SIM_KERNELS").filter(|p| !p.is_empty()) {
        None => Api {
            launch: rlhf_sim_launch,
            count: rlhf_sim_kernel_count,
            name: rlhf_sim_kernel_name,
            has: rlhf_sim_has_kernel,
        },
        Some(path) => load_api(&path).unwrap_or_else(|e| panic!("RLHF_SIM_KERNELS={}: {e}", path.to_string_lossy())),
    })
}

/// dlopen the library (never closed: its kernels may run until the process ends) and look up the entry points.
fn load_api(path: &std::ffi::OsStr) -> Result<Api> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_bytes())?;
    // SAFETY: `c` is a valid C string; the library's constructors only register its kernels.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a NUL-terminated message (or null) after a failed dlopen.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() { "dlopen failed".into() } else { unsafe { CStr::from_ptr(e) }.to_string_lossy() };
        bail!("{msg}");
    }
    let sym = |name: &CStr| -> Result<*mut c_void> {
        // SAFETY: `h` is a live handle and `name` a valid C string.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            bail!("no symbol {} in the library", name.to_string_lossy());
        }
        Ok(p)
    };
    // SAFETY: the library is a simulator library built like this crate's own (sim_runtime.cpp), whose C entry
    // points have exactly these signatures.
    unsafe {
        Ok(Api {
            launch: std::mem::transmute::<*mut c_void, LaunchFn>(sym(c"rlhf_sim_launch")?),
            count: std::mem::transmute::<*mut c_void, CountFn>(sym(c"rlhf_sim_kernel_count")?),
            name: std::mem::transmute::<*mut c_void, NameFn>(sym(c"rlhf_sim_kernel_name")?),
            has: std::mem::transmute::<*mut c_void, HasFn>(sym(c"rlhf_sim_has_kernel")?),
        })
    }
}

/// Every kernel compiled into the simulator, by its `extern "C"` name, sorted.
pub fn kernel_names() -> Vec<String> {
    let a = api();
    // SAFETY: the registry is filled by static constructors before main (or at dlopen) and never changes
    // afterwards.
    unsafe { (0..(a.count)()).map(|i| CStr::from_ptr((a.name)(i)).to_string_lossy().into_owned()).collect() }
}

pub fn has_kernel(name: &str) -> bool {
    let c = CString::new(name).unwrap();
    // SAFETY: read-only lookup with a valid C string.
    unsafe { (api().has)(c.as_ptr()) != 0 }
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

/// `RLHF_SIM_TRACE=FILE`: the name of every kernel launched, once per process, appended to FILE (which kernels a
/// test runs, for `tools/kernel-mutants.py`).
fn trace(kernel: &str) {
    type Trace = Mutex<(std::fs::File, HashSet<String>)>;
    static TRACE: OnceLock<Option<Trace>> = OnceLock::new();
    let t = TRACE.get_or_init(|| {
        let path = std::env::var_os("RLHF_SIM_TRACE").filter(|p| !p.is_empty())?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("RLHF_SIM_TRACE={}: {e}", path.to_string_lossy()));
        Some(Mutex::new((f, HashSet::new())))
    });
    if let Some(t) = t {
        let mut g = t.lock().unwrap_or_else(|e| e.into_inner());
        if g.1.insert(kernel.to_string()) {
            use std::io::Write;
            let _ = writeln!(g.0, "{kernel}");
        }
    }
}

impl Launcher for SimLauncher {
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        // SAFETY: this function's contract, passed on.
        super::profile::host_timed(|| kernel.to_string(), || unsafe { self.run(kernel, cfg, args) })
    }

    fn name(&self) -> &'static str {
        "sim"
    }
}

impl SimLauncher {
    /// Runs the launch to completion (the contract is [`Launcher::launch`]'s).
    unsafe fn run(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        trace(kernel);
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
            (api().launch)(
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
}

/// A 64-byte-aligned host buffer standing in for device memory in the simulator, between two guard zones of
/// [`SimBuf::GUARD`] bytes, the back one starting right after the last element. A kernel that writes even one
/// element before or past the buffer fails [`SimBuf::check_guards`], which drop runs (a panic naming the
/// buffer's length and the first overwritten byte); one that reads there reads NaN (see [`SimBuf::guard_byte`]).
pub struct SimBuf<T: bytemuck::Pod> {
    /// The allocation: GUARD bytes, the elements, at least GUARD bytes.
    base: *mut u8,
    len: usize,
    /// Which buffer this is (the guard bytes differ from buffer to buffer).
    id: u64,
    _t: PhantomData<T>,
}

// SAFETY: SimBuf owns its allocation like a Vec.
unsafe impl<T: bytemuck::Pod + Send> Send for SimBuf<T> {}
unsafe impl<T: bytemuck::Pod + Sync> Sync for SimBuf<T> {}

impl<T: bytemuck::Pod> SimBuf<T> {
    /// Bytes of each guard zone (also the alignment of the elements).
    pub const GUARD: usize = 64;

    fn bytes(len: usize) -> usize {
        len * std::mem::size_of::<T>()
    }
    fn layout(len: usize) -> std::alloc::Layout {
        let size = (2 * Self::GUARD + Self::bytes(len)).next_multiple_of(Self::GUARD);
        std::alloc::Layout::from_size_align(size, Self::GUARD).unwrap()
    }
    /// The guard byte at offset `at` of buffer `id`'s allocation. Each 2-byte pair (the elements start at an
    /// even offset) is one of 31 values `(0xf0..=0xff, 0x7f or 0xff)`, never `(0xff, 0xff)`, picked by a hash of
    /// the buffer and the pair: an aligned f64, f32 or bf16 read of a guard is a NaN (exponent bits all ones,
    /// mantissa not zero) whose payload no arithmetic produces, an integer read a huge index, and a kernel
    /// that copies one buffer's guard bytes into another's (an off-by-one copy) changes them.
    fn guard_byte(id: u64, at: usize) -> u8 {
        let mut h = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (at / 2) as u64;
        h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let v = ((h ^ (h >> 29)) % 31) as u8;
        if at.is_multiple_of(2) {
            0xf0 | (v & 0xf)
        } else if v & 0x10 != 0 {
            0xff
        } else {
            0x7f
        }
    }
    /// (offset from the allocation's start, length) of the two guard zones.
    fn zones(&self) -> [(usize, usize); 2] {
        let end = Self::GUARD + Self::bytes(self.len);
        [(0, Self::GUARD), (end, Self::layout(self.len).size() - end)]
    }
    pub fn zeros(len: usize) -> Self {
        // SAFETY: non-zero size, valid alignment.
        let base = unsafe { std::alloc::alloc_zeroed(Self::layout(len)) };
        assert!(!base.is_null(), "SimBuf allocation failed");
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let b = SimBuf { base, len, id, _t: PhantomData };
        for (at, n) in b.zones() {
            // SAFETY: the zone lies inside the allocation.
            let z = unsafe { std::slice::from_raw_parts_mut(base.add(at), n) };
            for (i, x) in z.iter_mut().enumerate() {
                *x = Self::guard_byte(id, at + i);
            }
        }
        b
    }
    pub fn from_slice(x: &[T]) -> Self {
        let mut b = Self::zeros(x.len());
        b.as_mut_slice().copy_from_slice(x);
        b
    }
    /// Every byte set to `byte` (0xff: NaN for f32/bf16), to catch outputs a kernel forgot to write.
    pub fn poisoned(len: usize, byte: u8) -> Self {
        let mut b = Self::zeros(len);
        bytemuck::cast_slice_mut::<T, u8>(b.as_mut_slice()).fill(byte);
        b
    }
    /// Err naming the first overwritten guard byte when something wrote before or past the elements.
    pub fn check_guards(&self) -> Result<()> {
        for (zone, (at, n)) in self.zones().into_iter().enumerate() {
            // SAFETY: the zone lies inside the allocation.
            let z = unsafe { std::slice::from_raw_parts(self.base.add(at), n) };
            if let Some(i) = z.iter().enumerate().position(|(i, &x)| x != Self::guard_byte(self.id, at + i)) {
                let elem = std::mem::size_of::<T>().max(1);
                let (side, k) =
                    if zone == 0 { ("before", (Self::GUARD - i).div_ceil(elem)) } else { ("past", i / elem + 1) };
                bail!(
                    "simulated device buffer of {} x {} bytes: written {side} its elements (guard byte {i}, element {k} {side} the \
                     {})",
                    self.len,
                    elem,
                    if zone == 0 { "first" } else { "last" }
                );
            }
        }
        Ok(())
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    fn data(&self) -> *mut u8 {
        // SAFETY: the elements start GUARD bytes into the allocation.
        unsafe { self.base.add(Self::GUARD) }
    }
    /// The "device pointer" kernels receive.
    pub fn ptr(&self) -> DevPtr {
        self.data() as DevPtr
    }
    /// The pointer `off` elements in.
    pub fn ptr_at(&self, off: usize) -> DevPtr {
        assert!(off <= self.len);
        self.data() as DevPtr + (off * std::mem::size_of::<T>()) as DevPtr
    }
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the elements are aligned for T (64 bytes) and len initialised (Pod) values.
        unsafe { std::slice::from_raw_parts(self.data() as *const T, self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.data() as *mut T, self.len) }
    }
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }
}

impl<T: bytemuck::Pod> Drop for SimBuf<T> {
    /// Checks the guards, then poisons the elements (0xff: NaN for f32/bf16) before freeing them, so that a
    /// kernel reading memory already freed (a dangling device pointer) reads NaN rather than the old values.
    fn drop(&mut self) {
        let guards = self.check_guards();
        // SAFETY: the elements lie inside the allocation, which is still live.
        unsafe { std::ptr::write_bytes(self.data(), 0xff, Self::bytes(self.len)) };
        // SAFETY: allocated in zeros() with the same layout.
        unsafe { std::alloc::dealloc(self.base, Self::layout(self.len)) }
        if let Err(e) = guards {
            if !std::thread::panicking() {
                panic!("{e}");
            }
        }
    }
}
