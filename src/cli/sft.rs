//! `rlhf sft`: supervised fine-tuning on prompt -> answer demonstrations (loss on answer tokens only).

use crate::cli::device::{self, DeviceArg};
use crate::model::AdamWConfig;
use crate::pipeline::run::LoopConfig;
use crate::pipeline::sft::{sft, SftConfig};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SftArgs {
    /// The model to fine-tune: a checkpoint, a run directory (its latest checkpoint) or a Hugging Face GPT-2 folder.
    #[arg(long)]
    pub base: PathBuf,
    /// Demonstrations, JSONL: {"prompt", "completion"} or {"messages": [{"role", "content"}, ...]}.
    #[arg(long)]
    pub data: PathBuf,
    /// The tokenizer of the base model (it must have the chat tokens <|user|>, <|assistant|>, <|end|>, <|pad|>).
    #[arg(long)]
    pub tokenizer: PathBuf,
    #[arg(long, default_value = "runs/sft")]
    pub out: PathBuf,
    /// Passes over the training split (sets the number of steps).
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Fraction of examples held out for the evaluation loss.
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Skip (and count) malformed JSONL lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Pause after this step (a checkpoint is written); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(a: SftArgs) -> Result<()> {
    let cfg = SftConfig {
        base: a.base,
        data: a.data,
        tokenizer: a.tokenizer,
        batch: a.batch,
        epochs: a.epochs,
        eval_fraction: a.eval_fraction,
        skip_bad: a.skip_bad,
        run: LoopConfig {
            out: a.out,
            steps: 0,
            lr: a.lr,
            min_lr: a.lr * 0.1,
            warmup: 10,
            adamw: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
            eval_every: a.eval_every.max(1),
            save_every: a.save_every.max(1),
            seed: a.seed,
            stop_after: a.stop_after,
        },
    };
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
