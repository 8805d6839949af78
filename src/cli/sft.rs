//! `rlhf sft`: supervised fine-tuning on prompt -> answer demonstrations (loss on answer tokens only).

use crate::cli::device::{self, DeviceArg};
use crate::pipeline::sft::{sft, SftSettings};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub settings: SftSettings,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(a: SftArgs) -> Result<()> {
    let cfg = a.settings.config()?;
    let dev = device::select(a.device)?;
    let s = crate::with_backend!(dev, |be| sft(be, cfg, a.resume))?;
    println!(
        "SFT done: {} steps on {} examples ({} held out; {} cut to the context, {} malformed lines skipped)",
        s.fit.steps, s.train_examples, s.eval_examples, s.truncated, s.skipped
    );
    println!(
        "  held-out answer loss: base model {:.4} -> fine-tuned {:.4} nats/token",
        s.base_eval_loss, s.fit.val_loss
    );
    println!("  checkpoint {}", s.fit.checkpoint.display());
    Ok(())
}
