//! `rlhf sample`: generate text from a checkpoint with a KV cache.

use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::model::sample::{generate, SampleConfig};
use crate::pipeline::run::check;
use crate::util::rng::Rng;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// A checkpoint directory, a run directory (its latest checkpoint), or a Hugging Face GPT-2 folder.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Text to continue (empty: start from <|endoftext|>).
    #[arg(long, default_value = "")]
    pub prompt: String,
    /// How many samples to draw (in one batch).
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

/// The sampling flags shared by `rlhf sample` and `rlhf chat`.
#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 100)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)?;
        check::non_negative("--temperature", self.temperature)?;
        check::positive("--top-p", self.top_p)?;
        if self.top_p > 1.0 {
            bail!("--top-p must be in (0, 1] (got {})", self.top_p);
        }
        Ok(())
    }

    /// The sampler's settings, stopping at `stop`.
    pub fn config(&self, stop: u32) -> SampleConfig {
        SampleConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            stop: Some(stop),
        }
    }
}

impl SampleArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("--num-samples", self.num_samples as u64, 1)?;
        self.sampling.validate()
    }
}

pub fn run(args: SampleArgs) -> Result<()> {
    args.validate()?;
    let tf = ck_tok::resolve(&args.tokenizer, &[Source::Model("--checkpoint", &args.checkpoint)])?;
    let tok = tf.tokenizer();
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let model = crate::checkpoint::persist::load_policy(be, &args.checkpoint)?;
        crate::tokenizer::check_vocab(tok.vocab_size(), model.cfg.vocab_size, &tf.source().display().to_string())?;
        let mut prompt = vec![tok.eot()];
        prompt.extend(tok.encode(&args.prompt));
        let sc = args.sampling.config(tok.eot());
        let gens = generate(be, &model, &vec![prompt; args.num_samples], &sc, &mut [Rng::new(args.sampling.seed)])?;
        for (i, g) in gens.iter().enumerate() {
            let body = if g.ended { &g.tokens[..g.tokens.len() - 1] } else { &g.tokens[..] };
            let text = tok.decode(body);
            println!(
                "--- sample {} ({} tokens{}) ---\n{}{}",
                i + 1,
                g.tokens.len(),
                if g.ended { ", ended" } else { "" },
                args.prompt,
                text
            );
        }
        Ok(())
    })
}
