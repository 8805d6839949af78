//! `rlhf dpo`: Direct Preference Optimization of a policy on chosen/rejected or ranked-K preferences.

use crate::cli::device::{self, DeviceArg};
use crate::pipeline::dpo::{dpo, DpoConfig};
use crate::util::summary::Summary;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct DpoArgs {
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub config: DpoConfig,
    /// Continue the run in --out from its latest checkpoint (same data, seed and hyper-parameters).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(a: DpoArgs) -> Result<()> {
    let cfg = a.config;
    cfg.validate()?;
    let dev = device::select(a.device)?;
    let s = crate::with_backend!(dev, |be| dpo(be, &cfg, a.resume))?;
    if !s.complete {
        println!(
            "DPO paused at step {} (last train loss {:.4}); checkpoint {}; continue with --resume",
            s.steps,
            s.final_train_loss,
            s.checkpoint.display()
        );
        return Ok(());
    }
    let pairs = format!("{} pairs of {} held-out prompts", s.eval_pairs, s.eval_prompts);
    Summary::new("dpo", format!("DPO done: {} steps on {} prompts", s.steps, s.train_prompts))
        .noted("held-out preference accuracy", 100.0 * s.eval.accuracy, "%", &pairs)
        .noted("held-out loss", s.eval.loss, "", "0.693 (log 2) at the reference")
        .noted("held-out margin", s.eval.margin, "nats", "beta (z_chosen - z_rejected)")
        .noted("held-out chosen log-ratio", s.eval.chosen_logratio, "nats", "log pi/ref of the preferred answers")
        .noted("held-out rejected log-ratio", s.eval.rejected_logratio, "nats", "of the others")
        .number("final train loss", s.final_train_loss, "")
        .number("malformed lines left out", s.skipped_lines as f64, "")
        .number("prompts left out (all answers tie)", s.all_tied_prompts as f64, "")
        .plot("loss.svg")
        .line(format!("checkpoint {}", s.checkpoint.display()))
        .finish(&cfg.out)
}
