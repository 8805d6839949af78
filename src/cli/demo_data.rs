//! `rlhf demo-data`: the demo task's files from a corpus (see [`crate::data::demo`] and `docs/demo.md`).

use crate::data::demo::{build, Sizes};
use crate::tokenizer::read_text;
use crate::util::summary::Summary;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DemoDataArgs {
    /// The corpus (.txt or .txt.gz), paragraphs separated by blank lines.
    #[arg(long, default_value = "data/corpus/austen.txt.gz")]
    pub corpus: PathBuf,
    /// Output directory: sft.jsonl, rm-prompts.jsonl, ppo-prompts.jsonl, heldout.jsonl, pretrain.txt,
    /// summary.json (the counts and mean lengths, as every step's summary).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed for the cut points and the shuffle that deals passages into the splits.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of SFT demonstrations (prompt + completion).
    #[arg(long, default_value_t = 2000)]
    pub sft: usize,
    /// Number of prompts whose sampled answers are ranked for the reward model.
    #[arg(long, default_value_t = 600)]
    pub rm_prompts: usize,
    /// Number of prompts for PPO (disjoint from the reward model's).
    #[arg(long, default_value_t = 600)]
    pub ppo_prompts: usize,
    /// Number of held-out prompts (evaluation; from the evaluation pool, with Austen's continuation).
    #[arg(long, default_value_t = 200)]
    pub heldout: usize,
}

pub fn run(args: DemoDataArgs) -> Result<()> {
    let text = read_text(&args.corpus)?;
    let sizes =
        Sizes { sft: args.sft, rm_prompts: args.rm_prompts, ppo_prompts: args.ppo_prompts, heldout: args.heldout };
    let data =
        build(&text, args.seed, sizes).with_context(|| format!("building demo data from {}", args.corpus.display()))?;
    data.write_files(&args.out)?;
    let mut summary =
        Summary::new("demo-data", format!("demo data from {} (seed {})", args.corpus.display(), args.seed));
    for (name, value) in data.summary().as_object().into_iter().flatten() {
        if let Some(v) = value.as_f64() {
            summary = summary.number(&name.replace('_', " "), v, "");
        }
    }
    summary.finish(&args.out)?;
    Ok(())
}
