//! Choosing where to compute: `--device cpu|cuda|auto` on every command that computes.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// CUDA when a usable GPU is present, else the CPU.
    Auto,
    /// The CPU engine (multi-threaded f32; the reference every GPU kernel is checked against).
    Cpu,
    /// An NVIDIA GPU through the CUDA driver, bf16 compute with f32 master weights (fails with the exact
    /// reason when it is not usable).
    Cuda,
    /// The CUDA kernels in the CPU simulator, as on a GPU (bf16 compute): very slow; for checking kernels
    /// and the GPU code path where there is no GPU.
    CudaSim,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    CudaSim,
}

/// Why CUDA cannot be used here, or None when the driver loads and this binary carries the kernels.
pub fn cuda_unavailable_reason() -> Option<String> {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some(
            "no CUDA driver: libcuda.so could not be loaded on this machine (no NVIDIA GPU or driver installed)".into(),
        );
    }
    if let Some(why) = crate::kernels::PTX_UNAVAILABLE_REASON {
        return Some(format!("this binary was built without its CUDA kernels ({why})"));
    }
    // SAFETY: only tries to dlopen cuBLASLt.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Some("cuBLASLt could not be loaded (put the CUDA 13 libcublasLt.so.13 on LD_LIBRARY_PATH)".into());
    }
    None
}

pub fn select(arg: DeviceArg) -> Result<Device> {
    match (arg, cuda_unavailable_reason()) {
        (DeviceArg::Cpu, _) => Ok(Device::Cpu),
        (DeviceArg::CudaSim, _) => Ok(Device::CudaSim),
        (DeviceArg::Cuda, Some(why)) => {
            bail!("--device cuda is not available: {why}. Use --device cpu (or auto) to run on the CPU.")
        }
        (DeviceArg::Auto, Some(why)) => {
            eprintln!("device: CPU ({why})");
            Ok(Device::Cpu)
        }
        (DeviceArg::Cuda | DeviceArg::Auto, None) => Ok(Device::Cuda),
    }
}

/// Run `$body` with `$be` bound to the selected backend (monomorphised per backend). Device creation
/// errors (e.g. no GPU behind the driver) propagate with `?`.
#[macro_export]
macro_rules! with_backend {
    ($device:expr, |$be:ident| $body:expr) => {
        match $device {
            $crate::cli::device::Device::Cpu => {
                $crate::backend::cpu::tune_allocator();
                let $be = &$crate::backend::Cpu::<f32>::new();
                $body
            }
            $crate::cli::device::Device::Cuda => {
                let $be = &$crate::kernels::CudaBackend::cuda(0, $crate::kernels::DType::BF16)?;
                $body
            }
            $crate::cli::device::Device::CudaSim => {
                let $be = &$crate::kernels::SimBackend::mixed();
                $body
            }
        }
    };
}
