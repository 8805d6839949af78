//! `rlhf demo-data`: the demo task's files from a corpus (see [`crate::data::demo`] and `docs/demo.md`).

use crate::data::demo::build;
use crate::judge::{Judge, LexiconJudge};
use crate::tokenizer::read_text;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DemoDataArgs {
    /// The corpus (.txt or .txt.gz), paragraphs separated by blank lines.
    #[arg(long, default_value = "data/corpus/austen.txt.gz")]
    pub corpus: PathBuf,
    /// Output directory: sft.jsonl, prompts.jsonl, heldout.jsonl, summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed for the cut points and the shuffle that deals passages into the splits.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of SFT demonstrations (prompt + completion).
    #[arg(long, default_value_t = 2000)]
    pub sft: usize,
    /// Number of prompt-only prompts (reward-model data collection and PPO).
    #[arg(long, default_value_t = 300)]
    pub prompts: usize,
    /// Number of held-out prompts (evaluation).
    #[arg(long, default_value_t = 100)]
    pub heldout: usize,
}

pub fn run(args: DemoDataArgs) -> Result<()> {
    let text = read_text(&args.corpus)?;
    let data = build(&text, args.seed, args.sft, args.prompts, args.heldout)
        .with_context(|| format!("building demo data from {}", args.corpus.display()))?;
    data.write_files(&args.out)?;
    let mut summary = data.summary();
    // The gold judge's view of the human-written continuations: the reference point for the policy.
    let mut judge = LexiconJudge::new()?;
    let items: Vec<(String, String)> = data.sft.iter().map(|e| (e.prompt.clone(), e.completion.clone())).collect();
    let scores = judge.score(&items)?;
    let mean = if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 };
    let positive = scores.iter().filter(|&&s| s > 0.0).count();
    let negative = scores.iter().filter(|&&s| s < 0.0).count();
    summary["corpus"] = args.corpus.display().to_string().into();
    summary["seed"] = args.seed.into();
    summary["judge"] = judge.name().into();
    summary["sft_completion_mean_judge_score"] = mean.into();
    summary["sft_completions_positive"] = positive.into();
    summary["sft_completions_negative"] = negative.into();
    let json = serde_json::to_string_pretty(&summary)? + "\n";
    crate::util::fs::write_atomic(&args.out.join("summary.json"), json.as_bytes())?;
    print!("{json}");
    Ok(())
}
