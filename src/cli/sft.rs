//! `rlhf sft`: supervised fine-tuning on prompt -> answer demonstrations (loss on answer tokens only).

use crate::cli::device::{self, DeviceArg};
use crate::pipeline::sft::{sft, SftSettings};
use crate::util::summary::Summary;
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
    let out = cfg.run.out.clone();
    let s = crate::with_backend!(dev, |be| sft(be, cfg, a.resume))?;
    Summary::new("sft", format!("SFT done: {} steps on {} examples", s.fit.steps, s.train_examples))
        .number("held-out examples", s.eval_examples as f64, "")
        .noted("held-out answer loss, base model", s.base_eval_loss, "nats/token", "before fine-tuning")
        .noted("held-out answer loss, fine-tuned", s.fit.val_loss, "nats/token", "answer tokens only")
        .number("train loss", s.fit.train_loss, "nats/token")
        .noted("examples cut to the context", s.truncated as f64, "", "prompt cut from the left")
        .number("malformed lines skipped", s.skipped as f64, "")
        .plot("loss.svg")
        .line(format!("checkpoint {}", s.fit.checkpoint.display()))
        .finish(&out)
}
