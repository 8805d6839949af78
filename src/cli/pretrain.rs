//! `rlhf pretrain`: train a decoder on token shards (from `rlhf prepare`).

use crate::cli::device::{self, DeviceArg};
use crate::model::{AdamWConfig, Config};
use crate::pipeline::pretrain::{pretrain, PretrainConfig};
use crate::pipeline::run::LoopConfig;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Directory of token shards written by `rlhf prepare` (train_*.bin, val_*.bin, meta.json).
    #[arg(long)]
    pub data: PathBuf,
    /// Run directory: metrics.jsonl, loss.svg and step-numbered checkpoints go here.
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Model size for a fresh model: tiny (CPU demo), gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Start from this checkpoint instead of a fresh model (our checkpoint, or a Hugging Face GPT-2 folder).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (same settings; --steps may be raised).
    #[arg(long)]
    pub resume: bool,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per sequence (at most the model's context).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Peak learning rate (after warmup; cosine decay to --min-lr-frac of it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// AdamW decoupled weight decay (2-D weights only).
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Measure the validation loss every N steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 250)]
    pub save_every: u64,
    /// Pause after this global step (a checkpoint is written); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Seed for initialisation and batch sampling: same seed, same run, bit for bit.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let meta_vocab = crate::data::shards::Meta::load(&args.data)?.vocab_size;
    let cfg = PretrainConfig {
        data: args.data,
        model: Config::preset(&args.preset, meta_vocab)?,
        batch: args.batch,
        seq: args.seq,
        eval_batches: args.eval_batches.max(1),
        run: LoopConfig {
            out: args.out,
            steps: args.steps,
            lr: args.lr,
            min_lr: args.lr * args.min_lr_frac,
            warmup: args.warmup,
            adamw: AdamWConfig { weight_decay: args.weight_decay, grad_clip: args.grad_clip, ..AdamWConfig::default() },
            eval_every: args.eval_every.max(1),
            save_every: args.save_every.max(1),
            seed: args.seed,
            stop_after: args.stop_after,
        },
    };
    let dev = device::select(args.device)?;
    let s = crate::with_backend!(dev, |be| pretrain(be, cfg, args.init.as_deref(), args.resume))?;
    let f = &s.fit;
    println!("pretraining done: {} steps, {:.0} tokens/s", f.steps, f.tokens_per_s);
    println!(
        "  train loss {:.4}   val loss {:.4}   unigram baseline {:.4} nats/token",
        f.train_loss, f.val_loss, s.unigram_entropy
    );
    println!("  checkpoint {}", f.checkpoint.display());
    Ok(())
}
