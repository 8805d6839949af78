//! `rlhf eval`: held-out evaluation of a policy against the SFT model, the baselines and the judge's
//! degenerate strategies (`crate::pipeline::eval`), and the over-optimisation curve of a PPO run.

use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::cli::judge::{JudgeChoice, DEFAULT_JUDGE};
use crate::data::chat::ChatFormat;
use crate::data::jsonl;
use crate::model::sample::SampleConfig;
use crate::pipeline::eval::{self, EvalConfig, HeldOut, Models};
use crate::pipeline::run::check;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The policy to evaluate (a checkpoint or a run directory), e.g. the PPO run.
    #[arg(long)]
    pub policy: PathBuf,
    /// The SFT model it is compared with (and the best-of-N baseline samples from).
    #[arg(long)]
    pub sft: PathBuf,
    /// The reward model (RM scores, best-of-N).
    #[arg(long)]
    pub reward: PathBuf,
    /// The pretrained model before SFT: the perplexity of every system's answers under it.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Held-out prompts, one JSON object per line: {"prompt": "..."}, with the reference answer as
    /// "completion" for the comparisons with it and the judge's degenerate strategies.
    #[arg(long)]
    pub prompts: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// The gold judge (default `gold`; see `rlhf judge --help`).
    #[command(flatten)]
    pub judge: JudgeChoice,
    /// Policy answers per prompt.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// N of the best-of-N baseline (the SFT model draws N x --samples answers per prompt).
    #[arg(long, default_value_t = 4)]
    pub best_of: usize,
    /// A PPO run directory: also draw gold and proxy score against sqrt(KL) (over-optimisation curve).
    #[arg(long)]
    pub ppo_run: Option<PathBuf>,
    /// Folder for eval.json (every number), eval.md (the tables) and the plots.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    /// Subtracted from the reward model's score of an answer that never ended (as in PPO).
    #[arg(long, default_value_t = 1.0)]
    pub no_eos_penalty: f64,
    /// The gold score of an answer that never ended (at or below the judge's lowest score, so it loses
    /// to every answer that ended; the gold judge gives an empty answer -10).
    #[arg(long, default_value_t = crate::judge::gold::EMPTY_SCORE, allow_hyphen_values = true)]
    pub unended_gold: f64,
    /// Prompts shown side by side.
    #[arg(long, default_value_t = 8)]
    pub side_by_side: usize,
    #[arg(long, default_value_t = 99)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

impl EvalArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::non_negative("--temperature", self.temperature)?;
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)?;
        check::at_least("--samples", self.samples as u64, 1)?;
        check::at_least("--best-of", self.best_of as u64, 1)?;
        check::non_negative("--no-eos-penalty", self.no_eos_penalty)?;
        check::finite("--unended-gold", self.unended_gold)
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    args.validate()?;
    // The tokenizer every model read records (all the same one).
    let mut sources = vec![
        Source::Model("--policy", &args.policy),
        Source::Model("--sft", &args.sft),
        Source::Model("--reward", &args.reward),
    ];
    if let Some(b) = &args.base {
        sources.push(Source::Model("--base", b));
    }
    let tf = ck_tok::resolve(&args.tokenizer, &sources)?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let heldout: Vec<HeldOut> = jsonl::read_heldout(&args.prompts, false)?
        .records
        .into_iter()
        .map(|(prompt, reference)| HeldOut { prompt, reference })
        .collect();
    if heldout.iter().any(|h| h.reference.is_none()) {
        println!(
            "note: {} has prompts without a \"completion\": no comparison with the reference and no degenerate strategies",
            args.prompts.display()
        );
    }
    let judge_choice =
        JudgeChoice { judge: Some(args.judge.judge.clone().unwrap_or(DEFAULT_JUDGE.into())), ..args.judge.clone() };
    let mut judge = judge_choice.build()?;
    let cfg = EvalConfig {
        sample: SampleConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: 0,
            top_p: 1.0,
            stop: Some(ct.end),
        },
        samples: args.samples,
        best_of: args.best_of,
        no_eos_penalty: args.no_eos_penalty,
        unended_gold: args.unended_gold,
        seed: args.seed,
        side_by_side: args.side_by_side,
    };
    let dev = device::select(args.device)?;
    let report: eval::EvalReport = crate::with_backend!(dev, |be| {
        let load = |p: &PathBuf| crate::checkpoint::persist::load_policy(be, p);
        let policy = load(&args.policy)?;
        let sft = load(&args.sft)?;
        let base = args.base.as_ref().map(load).transpose()?;
        let reward = crate::pipeline::reward::load(be, &args.reward)?;
        let vocab = [policy.cfg.vocab_size, sft.cfg.vocab_size, reward.cfg().vocab_size];
        if vocab.iter().chain(base.as_ref().map(|b| &b.cfg.vocab_size)).any(|&v| v != tok.vocab_size()) {
            bail!(
                "vocabularies differ: tokenizer {}, policy {}, SFT {}, reward model {}{}",
                tok.vocab_size(),
                vocab[0],
                vocab[1],
                vocab[2],
                base.as_ref().map_or(String::new(), |b| format!(", base {}", b.cfg.vocab_size))
            );
        }
        let models = Models { policy: &policy, sft: &sft, reward: &reward, base: base.as_ref() };
        eval::evaluate(be, &models, tok, &ct, &heldout, &cfg, judge.as_deref_mut())
    })?;
    let markdown: String = report.tables().iter().map(|t| t.to_markdown() + "\n").collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{markdown}");
    }
    let mut summary = report.summary();
    if let Some(run) = &args.ppo_run {
        let svg = args.out.as_ref().unwrap_or(run).join(OVEROPTIMISATION_PLOT);
        let curve = eval::Curve::of_run(run)?;
        curve.plot(&svg)?;
        println!("over-optimisation curve ({} gold points): {}", curve.points.len(), svg.display());
        summary = curve.add_to(summary.plot(OVEROPTIMISATION_PLOT));
    }
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        crate::util::fs::write_atomic(
            &out.join("eval.json"),
            (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
        )?;
        crate::util::fs::write_atomic(&out.join("eval.md"), markdown.as_bytes())?;
        println!("wrote {} and {}", out.join("eval.json").display(), out.join("eval.md").display());
        summary.finish(out)?;
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

/// The over-optimisation curve's file name beside the evaluation.
const OVEROPTIMISATION_PLOT: &str = "overoptimisation.svg";
