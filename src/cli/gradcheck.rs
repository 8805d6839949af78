//! `rlhf gradcheck`: every op's backward and the whole model's gradient against finite differences.

use crate::gradcheck;
use anyhow::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed for the random shapes' contents and the checked entries.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

pub fn run(args: GradcheckArgs) -> Result<()> {
    let results = gradcheck::run_all(args.seed);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("CPU backend in f64, central differences (h = 1e-6); pass when max abs err <= {:e} + {:e} * max|grad|", gradcheck::ATOL, gradcheck::RTOL);
        print!("{}", gradcheck::format_table(&results));
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.op.as_str()).collect();
    if !failed.is_empty() {
        bail!("gradient check failed for: {}", failed.join(", "));
    }
    Ok(())
}
