//! The one launch layer: every kernel's grid, block and shared-memory size is computed here, and launched
//! through a [`Launcher`] — the GPU (CUDA driver) or the CPU simulator — so the simulator tests exercise
//! exactly the configurations the GPU gets.
//!
//! Layout: this module holds what every launcher shares ([`Launcher`], [`Arg`], [`LaunchConfig`], [`DType`],
//! [`DevPtr`], size and alignment checks); each kernel file `kernels/NAME.cu` has its launch functions in the
//! submodule `NAME` (re-exported here, so `launch::gelu_forward` etc. work); [`geometry`] holds the block,
//! tile and shared-memory sizes generated from `kernels/geometry.rs`, the values the kernels compile with.
//! A new kernel file gets a new submodule here (opening with a `//!` naming the `.cu` file and its kernels)
//! and, if its launch depends on a size the kernel also uses, a new entry in `kernels/geometry.rs`.
//!
//! Conventions: pointers are device addresses ([`DevPtr`]); element types follow [`DType`] (`T` below);
//! statistics, losses, weights, optimizer state and reduction partials are f32 (sum of squares: f64)
//! whatever `T` is. Ops that need temporary device memory take a `scratch` pointer whose size in bytes the
//! matching `*_scratch_bytes` function gives. Packed (16-byte) kernels require 16-byte-aligned pointers:
//! checked here.
//!
//! Safety: a kernel dereferences the device pointers it is given, so [`Launcher::launch`] and every launch
//! function taking a [`DevPtr`] are `unsafe`. Their common contract: each pointer addresses memory of the
//! launcher's device (a host address for the simulator) that holds at least the elements the function's
//! doc gives it (shapes as passed, in `dt` unless said otherwise), is not written concurrently by anything
//! else, and stays allocated until the launch has completed (on the GPU: until the stream reaches it).
//! Size arguments are range-checked here; the buffers behind the pointers cannot be.

use anyhow::{ensure, Result};
use std::ffi::c_void;

pub mod adamw;
pub mod attention;
pub mod attention_decode;
pub mod attention_unfused;
pub mod crossentropy;
pub mod encoder;
pub mod entropy;
pub mod gelu;
pub mod geometry;
pub mod layernorm;
pub mod linear;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod rows;
pub mod sample;
pub mod swiglu;

pub use adamw::*;
pub use attention::*;
pub use attention_decode::*;
pub use attention_unfused::*;
pub use crossentropy::*;
pub use encoder::*;
pub use entropy::*;
pub use gelu::*;
pub use layernorm::*;
pub use linear::*;
pub use residual::*;
pub use rmsnorm::*;
pub use rope::*;
pub use rows::*;
pub use sample::*;
pub use swiglu::*;

/// A device address (a host address in the simulator).
pub type DevPtr = u64;

/// The storage type of a kernel instantiation; selects the `_f32` / `_bf16` entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
}

impl DType {
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 => 2,
        }
    }
    /// Elements per 16-byte pack.
    pub fn pack(self) -> usize {
        16 / self.size()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes. Above 48 KiB the device launcher must first raise the function's
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES (the simulator accepts up to 227 KiB).
    pub smem: u32,
}

impl LaunchConfig {
    pub fn linear(n_threads: usize, block: u32) -> Self {
        let g = n_threads.div_ceil(block as usize).max(1);
        LaunchConfig { grid: [g as u32, 1, 1], block: [block, 1, 1], smem: 0 }
    }
}

/// One kernel parameter, passed by value like cuLaunchKernel's `kernelParams`.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(DevPtr),
    I32(i32),
    U32(u32),
    F32(f32),
    F64(f64),
}

impl Arg {
    /// Address of the parameter's value (what cuLaunchKernel and the simulator read).
    pub fn value_ptr(&self) -> *mut c_void {
        match self {
            Arg::Ptr(p) => p as *const u64 as *mut c_void,
            Arg::I32(v) => v as *const i32 as *mut c_void,
            Arg::U32(v) => v as *const u32 as *mut c_void,
            Arg::F32(v) => v as *const f32 as *mut c_void,
            Arg::F64(v) => v as *const f64 as *mut c_void,
        }
    }
}

/// Runs a kernel by its `extern "C"` name.
pub trait Launcher {
    /// Launches `kernel` with `cfg` and `args` (by value, in the kernel's parameter order).
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number and types, and every [`Arg::Ptr`] among them
    /// must satisfy the module's contract for every access the kernel makes with these arguments and this
    /// configuration (see the kernel's `.cu` file).
    unsafe fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()>;
    fn name(&self) -> &'static str;
}

fn i32_of(n: usize, what: &str) -> Result<i32> {
    ensure!(n <= i32::MAX as usize, "{what} = {n} exceeds the kernels' 32-bit sizes");
    Ok(n as i32)
}

fn aligned16(ptrs: &[DevPtr], kernel: &str) -> Result<()> {
    for &p in ptrs {
        ensure!(p % 16 == 0, "{kernel}: pointer {p:#x} is not 16-byte aligned (packed loads)");
    }
    Ok(())
}

fn k(name: &str, dt: DType) -> String {
    format!("{name}_{}", dt.suffix())
}

/// Config of the packed elementwise kernels: one thread per 16-byte pack.
fn packed_cfg(n: usize, dt: DType) -> LaunchConfig {
    LaunchConfig::linear(n.div_ceil(dt.pack()), geometry::EW_BLOCK)
}
