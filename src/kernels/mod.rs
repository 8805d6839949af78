//! The CUDA kernels (`kernels/*.cu`): what this build compiled, and the one launch layer that drives them.
//!
//! - [`launch`]: grid/block/shared-memory sizes for every kernel, one submodule per kernel file, over a
//!   [`Launcher`] that is either the GPU (through the CUDA driver) or the CPU simulator
//!   ([`sim::SimLauncher`]); the sizes the kernels share come from `kernels/geometry.rs`
//!   ([`launch::geometry`]). Launches and device copies take raw device pointers and are `unsafe`;
//!   [`engine::KernelBackend`]'s methods check buffer sizes and stay safe.
//! - [`cuda::CudaLauncher`]: the real-device launcher (PTX loaded once, kernels by name, cuLaunchKernel).
//! - [`sim`]: the simulator's entry points (the same `.cu` sources compiled as C++, see `kernels/sim/`).
//! - [`device::Device`]: memory, copies, launches and matrix products, on the GPU ([`cuda_device`]) or in
//!   the simulator ([`device::SimDevice`]); [`engine::KernelBackend`], the engine's backend written once
//!   over it (f32, or bf16 compute with f32 master weights).
//! - The generated constants below: the embedded PTX per kernel file and architecture, why it is missing if
//!   it is, which kernel files the simulator runs and which kernels are GPU-only.

pub mod cuda;
pub mod cuda_device;
pub mod device;
pub mod engine;
pub mod launch;
pub mod sim;

pub use engine::{CudaBackend, KernelBackend, SimBackend};
pub use launch::{Arg, DType, DevPtr, LaunchConfig, Launcher};

include!(concat!(env!("OUT_DIR"), "/kernels_gen.rs"));

/// The PTX of kernel file `stem` for the best architecture not above `sm` (e.g. 90 for an H100).
pub fn ptx_for(stem: &str, sm: u32) -> Option<&'static str> {
    PTX_MODULES.iter().filter(|(s, a, _)| *s == stem && *a <= sm).max_by_key(|(_, a, _)| *a).map(|(_, _, p)| *p)
}

/// Per-kernel register/spill lines of the ptxas report: (file, arch, kernel, registers, spill stores, spill loads).
pub fn ptxas_summary() -> Vec<(String, String, String, u32, u32, u32)> {
    let mut v = Vec::new();
    let (mut file, mut arch, mut kernel, mut stores, mut loads) = (String::new(), String::new(), String::new(), 0, 0);
    for l in PTXAS_REPORT.lines() {
        if let Some(rest) = l.strip_prefix("== ") {
            let mut it = rest.split_whitespace();
            file = it.next().unwrap_or("").into();
            arch = it.next().unwrap_or("").into();
        } else if let Some(k) = l.split("Function properties for ").nth(1) {
            kernel = k.trim().into();
        } else if l.contains("bytes spill stores") {
            let nums: Vec<u32> = l.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
            if nums.len() >= 3 {
                stores = nums[1];
                loads = nums[2];
            }
        } else if let Some(r) = l.split("Used ").nth(1) {
            let regs = r.split_whitespace().next().and_then(|s| s.parse().ok()).unwrap_or(0);
            v.push((file.clone(), arch.clone(), kernel.clone(), regs, stores, loads));
        }
    }
    v
}
