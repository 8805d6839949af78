//! `rlhf eval`: held-out win rate of a policy against the SFT model (`crate::pipeline::eval`), and the
//! over-optimisation curve of a PPO run.

use crate::cli::device::{self, DeviceArg};
use crate::cli::judge::JudgeChoice;
use crate::data::chat::{self, ChatTokens};
use crate::data::jsonl;
use crate::model::sample::SampleConfig;
use crate::pipeline::eval;
use crate::pipeline::run::check;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The PPO policy (a checkpoint or a run directory).
    #[arg(long)]
    pub policy: PathBuf,
    /// The SFT model it is compared with.
    #[arg(long)]
    pub sft: PathBuf,
    #[arg(long)]
    pub reward: PathBuf,
    /// Held-out prompts, one JSON object per line: {"prompt": "..."}.
    #[arg(long)]
    pub prompts: PathBuf,
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The gold judge gives the win rate by gold score.
    #[command(flatten)]
    pub judge: JudgeChoice,
    /// A PPO run directory: also draw gold and proxy score against sqrt(KL) (over-optimisation curve).
    #[arg(long)]
    pub ppo_run: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = -1.0, allow_hyphen_values = true)]
    pub no_eos_penalty: f64,
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
        check::finite("--no-eos-penalty", self.no_eos_penalty)
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    args.validate()?;
    let tok = Tokenizer::load(&args.tokenizer)?;
    let ct = ChatTokens::from_tokenizer(&tok)?;
    let (end, pad) = (ct.end, ct.pad);
    let texts = jsonl::read_prompts(&args.prompts, false)?.records;
    let prompts: Vec<Vec<u32>> = texts.iter().map(|p| chat::encode_prompt(&tok, &ct, p)).collect::<Result<_>>()?;
    let mut judge = args.judge.build()?;
    let has_judge = judge.is_some();
    let dev = device::select(args.device)?;
    let report: eval::EvalReport = crate::with_backend!(dev, |be| {
        let policy = crate::checkpoint::persist::load_policy(be, &args.policy)?;
        let sft = crate::checkpoint::persist::load_policy(be, &args.sft)?;
        let reward = crate::pipeline::reward::load(be, &args.reward)?;
        if policy.cfg.vocab_size != reward.cfg().vocab_size || sft.cfg.vocab_size != policy.cfg.vocab_size {
            bail!(
                "vocabularies differ: policy {}, SFT {}, reward model {}",
                policy.cfg.vocab_size,
                sft.cfg.vocab_size,
                reward.cfg().vocab_size
            );
        }
        let sc = SampleConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: 0,
            top_p: 1.0,
            stop: Some(end),
        };
        let decode = |ids: &[u32]| chat::answer_text(&tok, ids, end);
        let mut gold = |pairs: &[(String, String)]| judge.as_mut().context("no judge")?.score(pairs);
        eval::evaluate(
            be,
            &policy,
            &sft,
            &reward,
            &prompts,
            &sc,
            pad,
            args.no_eos_penalty,
            args.seed,
            &decode,
            if has_judge { Some(&mut gold) } else { None },
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("held-out prompts: {}", report.prompts);
        if let (Some(w), Some(gp), Some(gs)) = (report.win_rate_gold, report.gold_policy, report.gold_sft) {
            println!("  win rate vs SFT (gold judge)   {:.1}%   mean gold score {gp:.4} vs {gs:.4}", 100.0 * w);
        }
        println!(
            "  win rate vs SFT (reward model) {:.1}%   mean RM score   {:.4} vs {:.4}",
            100.0 * report.win_rate_rm,
            report.rm_policy,
            report.rm_sft
        );
        println!("  KL(policy || SFT) per answer   {:.3} nats", report.kl_to_sft);
        println!(
            "  answers ending in <|end|>      {:.0}% vs {:.0}%; mean length {:.1} vs {:.1} tokens",
            100.0 * report.eos_frac_policy,
            100.0 * report.eos_frac_sft,
            report.answer_len_policy,
            report.answer_len_sft
        );
    }
    if let Some(run) = &args.ppo_run {
        let svg = run.join("overoptimisation.svg");
        let n = eval::overoptimisation_plot(run, &svg)?;
        println!("  over-optimisation curve ({n} gold points): {}", svg.display());
    }
    Ok(())
}
