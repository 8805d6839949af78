//! The CUDA kernels (`kernels/*.cu`): what this build compiled, and the one launch layer that drives them.
//!
//! - [`launch`]: grid/block/shared-memory sizes for every kernel, one submodule per kernel file, over a
//!   [`Launcher`] that is either the GPU (through the CUDA driver) or the CPU simulator
//!   ([`sim::SimLauncher`]); the sizes the kernels share come from `kernels/geometry.rs`
//!   ([`launch::geometry`]). Launches and device copies take raw device pointers and are `unsafe`;
//!   [`engine::KernelBackend`]'s methods check buffer sizes and stay safe.
//! - [`cuda::CudaLauncher`]: the real-device launcher (PTX loaded once, kernels by name, cuLaunchKernel).
//! - [`profile`]: `RLHF_CUDA_PROFILE=1`, time per kernel name (CUDA events; the host clock in the simulator).
//! - [`sync`]: `RLHF_CUDA_SYNC=1`, a wait after every launch and product, errors naming the kernel.
//! - [`sim`]: the simulator's entry points (the same `.cu` sources compiled as C++, see `kernels/sim/`).
//! - [`cuda_gemm::Gemms`]: the GPU's matrix products (cuBLASLt plans per shape, plain cuBLAS fallback).
//! - [`device::Device`]: memory, copies, launches and matrix products, on the GPU ([`cuda_device`]) or in
//!   the simulator ([`device::SimDevice`]); [`engine::KernelBackend`], the engine's backend written once
//!   over it (f32, or bf16 compute with f32 master weights).
//! - The generated constants below: the embedded cubins and PTX per kernel file and architecture ([`image_for`]
//!   picks what a GPU loads), why it is missing if
//!   it is, which kernel files the simulator runs and which kernels are GPU-only.

pub mod cuda;
pub mod cuda_device;
pub mod cuda_gemm;
pub mod device;
pub mod engine;
pub mod launch;
pub mod profile;
pub mod sim;
pub mod sync;

pub use engine::{CudaBackend, KernelBackend, SimBackend};
pub use launch::{Arg, DType, DevPtr, LaunchConfig, Launcher};

include!(concat!(env!("OUT_DIR"), "/kernels_gen.rs"));

/// A kernel file's code as the driver loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image<'a> {
    /// Machine code for `arch`: runs on GPUs of the same major version and a minor version not below.
    Cubin { arch: u32, bytes: &'a [u8] },
    /// PTX for `arch`, compiled by the driver for the GPU at load (JIT).
    Ptx { arch: u32, text: &'a str },
}

impl Image<'_> {
    /// `sm_90 cubin` or `sm_80 PTX`.
    pub fn describe(&self) -> String {
        match self {
            Image::Cubin { arch, .. } => format!("sm_{arch} cubin"),
            Image::Ptx { arch, .. } => format!("sm_{arch} PTX"),
        }
    }
}

/// What to load of kernel file `stem` on a GPU of compute capability `sm` (10 * major + minor): the cubin
/// of the newest architecture it runs on (same major version, minor not above), else the PTX of the newest
/// architecture not above `sm`. `cubins` and `ptx` are tables like [`CUBIN_MODULES`] and [`PTX_MODULES`].
pub fn image_for<'a>(
    cubins: &[(&str, u32, &'a [u8])],
    ptx: &[(&str, u32, &'a str)],
    stem: &str,
    sm: u32,
) -> Option<Image<'a>> {
    let cubin = cubins
        .iter()
        .filter(|(s, a, _)| *s == stem && a / 10 == sm / 10 && *a <= sm)
        .max_by_key(|(_, a, _)| *a)
        .map(|&(_, arch, bytes)| Image::Cubin { arch, bytes });
    cubin.or_else(|| ptx_image(ptx, stem, sm))
}

/// The PTX of kernel file `stem` for the newest architecture not above `sm`.
pub fn ptx_image<'a>(ptx: &[(&str, u32, &'a str)], stem: &str, sm: u32) -> Option<Image<'a>> {
    ptx.iter()
        .filter(|(s, a, _)| *s == stem && *a <= sm)
        .max_by_key(|(_, a, _)| *a)
        .map(|&(_, arch, text)| Image::Ptx { arch, text })
}

/// The kernels a PTX text defines: the names of its `.entry` directives (`.visible .entry NAME(`).
pub fn ptx_entries(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| {
        let rest = l.trim_start().strip_prefix(".visible ").unwrap_or(l.trim_start()).strip_prefix(".entry ")?;
        rest.split(|c: char| c == '(' || c.is_whitespace()).next().filter(|n| !n.is_empty())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const CUBINS: &[(&str, u32, &[u8])] = &[("gelu", 80, b"c80"), ("gelu", 90, b"c90")];
    const PTX: &[(&str, u32, &str)] = &[("gelu", 80, "p80"), ("gelu", 90, "p90")];

    #[test]
    fn the_cubin_of_the_gpus_architecture_is_loaded() {
        assert_eq!(image_for(CUBINS, PTX, "gelu", 90), Some(Image::Cubin { arch: 90, bytes: b"c90" }));
        // sm_86 runs sm_80 machine code.
        assert_eq!(image_for(CUBINS, PTX, "gelu", 86), Some(Image::Cubin { arch: 80, bytes: b"c80" }));
    }

    #[test]
    fn another_major_version_gets_the_newest_ptx_below_it() {
        assert_eq!(image_for(CUBINS, PTX, "gelu", 100), Some(Image::Ptx { arch: 90, text: "p90" }));
        assert_eq!(image_for(&CUBINS[..1], PTX, "gelu", 90), Some(Image::Ptx { arch: 90, text: "p90" }));
        assert_eq!(image_for(CUBINS, PTX, "gelu", 75), None);
        assert_eq!(image_for(CUBINS, PTX, "layernorm", 90), None);
    }

    #[test]
    fn a_ptx_text_names_the_kernels_it_defines() {
        let text = "//\n.version 9.0\n.visible .entry gelu_forward_f32(\n\t.param .u64 out\n)\n\
                    .func helper(\n.entry local_kernel (\n";
        assert_eq!(ptx_entries(text).collect::<Vec<_>>(), ["gelu_forward_f32", "local_kernel"]);
        // The embedded modules (built with nvcc): every file defines kernels, each name in one file only.
        let mut seen = std::collections::HashMap::new();
        for &(stem, arch, text) in PTX_MODULES {
            let names: Vec<&str> = ptx_entries(text).collect();
            assert!(!names.is_empty(), "{stem}.cu (sm_{arch}) defines no kernel");
            for n in names {
                let first = *seen.entry(n).or_insert(stem);
                assert_eq!(first, stem, "kernel {n} is defined in {first}.cu and {stem}.cu");
            }
        }
    }
}
