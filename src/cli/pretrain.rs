//! `rlhf pretrain`: train a decoder on token shards (from `rlhf prepare`).

use crate::cli::device::{self, DeviceArg};
use crate::model::Config;
use crate::pipeline::pretrain::{pretrain, PretrainSettings};
use crate::util::summary::Summary;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub settings: PretrainSettings,
    /// Shape of a fresh model. GPT-2: tiny (CPU demo), gold, gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl.
    /// Llama family: llama-tiny (CPU demo), smollm2-135m, smollm2-360m, qwen2.5-0.5b, llama-3.2-1b (their
    /// published shapes; the vocabulary is the tokenizer's).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Start from this checkpoint instead of a fresh model (our checkpoint, or a Hugging Face GPT-2, Llama,
    /// Qwen2 or Mistral folder).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (same settings; --steps may be raised).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let meta_vocab = crate::data::shards::Meta::load(&args.settings.data)?.vocab_size;
    let cfg = args.settings.config(Config::preset(&args.preset, meta_vocab)?)?;
    let dev = device::select(args.device)?;
    let out = cfg.run.out.clone();
    let s = crate::with_backend!(dev, |be| pretrain(be, cfg, args.init.as_deref(), args.resume))?;
    let f = &s.fit;
    Summary::new("pretrain", format!("pretraining done: {} steps", f.steps))
        .number("train loss", f.train_loss, "nats/token")
        .noted("validation loss", f.val_loss, "nats/token", "held-out shard")
        .noted("unigram baseline", s.unigram_entropy, "nats/token", "entropy of the token frequencies")
        .number("throughput", f.tokens_per_s, "tokens/s")
        .plot("loss.svg")
        .line(format!("checkpoint {}", f.checkpoint.display()))
        .finish(&out)
}
