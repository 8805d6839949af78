//! `rlhf gradcheck`: on the CPU, every op's backward and the whole model's gradient against finite
//! differences in f64; on `--device cuda` (or `cuda-sim`), every CUDA kernel forward and backward, in f32
//! and in bf16, and one whole training step, against the CPU engine.

use crate::check::kernels;
use crate::check::{self, CheckResult};
use crate::cli::device::{self, Device, DeviceArg};
use crate::kernels::device::Device as _;
use crate::kernels::{CudaBackend, DType, SimBackend};
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    /// cpu: analytic gradients vs finite differences (f64). cuda / cuda-sim: the kernels vs the CPU engine,
    /// f32 and bf16 (cuda-sim runs them in the CPU simulator). auto: cuda where usable, else cpu.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed for the random shapes' contents and the checked entries.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

pub fn run(args: GradcheckArgs) -> Result<()> {
    let dev = device::select(args.device)?;
    let (header, results) = match dev {
        Device::Cpu => (
            format!(
                "CPU backend in f64, central differences (h = 1e-6); pass when max abs err <= {:e} + {:e} * max|grad|",
                check::ATOL,
                check::RTOL
            ),
            check::run_all(args.seed),
        ),
        Device::Cuda | Device::CudaSim => {
            let mut results: Vec<CheckResult> = Vec::new();
            let mut name = String::new();
            for dt in [DType::F32, DType::BF16] {
                if dev == Device::Cuda {
                    let be = CudaBackend::cuda(0, dt)?;
                    name = be.dev.name();
                    results.extend(kernels::run(&be, args.seed)?);
                } else {
                    let be = if dt == DType::F32 { SimBackend::new() } else { SimBackend::mixed() };
                    name = be.dev.name();
                    results.extend(kernels::run(&be, args.seed)?);
                }
            }
            let header = format!(
                "CUDA kernels on {name} vs the CPU engine (same inputs); error = max|got - want| / max|want| per tensor, \
                 the worst tensor of each row shown.\ntolerances: f32 {:e}; bf16 ops {:e}; bf16 whole step {:e} (see src/kernel_check.rs)",
                kernels::F32_TOL,
                kernels::BF16_OP_TOL,
                kernels::BF16_STEP_TOL
            );
            (header, results)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{header}");
        print!("{}", check::format_table(&results));
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.op.as_str()).collect();
    if !failed.is_empty() {
        bail!("gradient check failed for: {}", failed.join(", "));
    }
    Ok(())
}
