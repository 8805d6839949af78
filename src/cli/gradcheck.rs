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
    let results = match dev {
        Device::Cpu => {
            let results = check::run_all(args.seed);
            if !args.json {
                println!(
                    "CPU backend in f64, central differences (h = 1e-6); pass when max abs err <= {:e} + {:e} * max|grad|",
                    check::ATOL,
                    check::RTOL
                );
                print!("{}", check::format_table(&results));
            }
            results
        }
        Device::Cuda | Device::CudaSim => kernel_rows(dev, &args)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.op.as_str()).collect();
    if !failed.is_empty() {
        bail!("gradient check failed for: {}", failed.join(", "));
    }
    Ok(())
}

/// The kernel checks in f32 then bf16, each row printed (without `--json`) as soon as it is known, so that a
/// run cut short still shows every row before the cut.
fn kernel_rows(dev: Device, args: &GradcheckArgs) -> Result<Vec<CheckResult>> {
    let mut results: Vec<CheckResult> = Vec::new();
    let print = |r: &CheckResult| {
        if !args.json {
            print!("{}", check::table_row(r));
        }
    };
    for dt in [DType::F32, DType::BF16] {
        let rows = if dev == Device::Cuda {
            let be = CudaBackend::cuda(0, dt)?;
            header(args, &be.dev.name(), dt, be.dev.kernels_loaded());
            kernels::run(&be, args.seed, print)
        } else {
            let be = if dt == DType::F32 { SimBackend::new() } else { SimBackend::mixed() };
            header(args, &be.dev.name(), dt, "the simulator's kernels");
            kernels::run(&be, args.seed, print)
        };
        results.extend(rows);
    }
    Ok(results)
}

fn header(args: &GradcheckArgs, name: &str, dt: DType, loaded: &str) {
    if args.json {
        return;
    }
    if dt == DType::F32 {
        println!(
            "CUDA kernels on {name} ({loaded}) vs the CPU engine (same inputs); error = max|got - want| / max|want| per \
             tensor, the worst tensor of each row shown.\ntolerances: f32 {:e}; bf16 ops {:e}; bf16 whole step {:e} \
             (see src/check/kernels.rs)",
            kernels::F32_TOL,
            kernels::BF16_OP_TOL,
            kernels::BF16_STEP_TOL
        );
        print!("{}", check::table_header());
    }
}
