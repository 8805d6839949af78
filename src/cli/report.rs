//! `rlhf report`: one page from a pipeline's run folder (`crate::pipeline::report`).

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The pipeline's folder (e.g. runs/demo): every step's summary.json in it and in its subfolders (two
    /// levels down) goes into DIR/report.html (plots inline) and DIR/report.md.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let (html, md) = crate::pipeline::report::write(&a.run)?;
    println!("report: {} and {}", html.display(), md.display());
    Ok(())
}
