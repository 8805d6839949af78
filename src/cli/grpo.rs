//! `rlhf grpo`: GRPO or RLOO, critic-free RL against a reward model or a judge (`crate::pipeline::grpo`).

use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::cli::judge::JudgeChoice;
use crate::cli::ppo::{load_policy_and_prompts, Start};
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl;
use crate::pipeline::grpo::{train, GrpoConfig, GrpoSummary, Hooks, Reward};
use crate::pipeline::metrics;
use crate::pipeline::rollout::GoldHook;
use crate::pipeline::run::check;
use crate::util::summary::Summary;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const LONG_HELP: &str = "\
Step 3 without a value model: GRPO (Shao et al. 2024) or, with --baseline loo, RLOO (Ahmadian et al. 2024).

Each iteration samples --group answers to each of --prompts-per-iteration prompts, scores them, and gives
every token of an answer the answer's advantage against its group: (r - mean) / std for GRPO (without the
std with --no-scale-std, as Dr. GRPO), r minus the mean of the others for RLOO. The clipped objective is
then optimised for --epochs passes, with the KL to the reference either per token in the loss (--kl-in
loss, GRPO's k3 estimator) or subtracted from each answer's reward (--kl-in reward, as PPO and RLOO).

What scores the answers:
  --reward DIR        a reward model (`rlhf reward`); --judge then only draws the gold curve
  --judge SPEC        without --reward, the judge's score is the reward (verifiable rewards: a program that
                      reads {\"prompt\", \"answer\"} lines and prints {\"score\"} lines, see `rlhf judge --help`)

Examples:
  rlhf grpo --policy runs/sft --reward runs/reward --prompts prompts.jsonl --out runs/grpo
  rlhf grpo --policy runs/sft --reward runs/reward --prompts prompts.jsonl --baseline loo --kl-in reward \\
            --beta 0.05 --out runs/rloo
  rlhf grpo --policy runs/sft --judge \"python3 check_answer.py\" --prompts problems.jsonl --out runs/grpo-verify";

#[derive(clap::Args, Debug)]
pub struct GrpoArgs {
    /// The SFT model the policy starts from (and the frozen reference, unless --reference is given).
    #[arg(long)]
    pub policy: PathBuf,
    /// The frozen reference of the KL (default: --policy).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// A frozen reward model scoring the answers; without it, --judge is the reward.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// Prompts, one JSON object per line: {"prompt": "..."}.
    #[arg(long)]
    pub prompts: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub config: GrpoConfig,
    /// The reward without --reward; with it, the gold judge scoring rollouts every --gold-every iterations.
    #[command(flatten)]
    pub judge: JudgeChoice,
    /// The gold score of a rollout that never ended (as in `rlhf eval`).
    #[arg(long, default_value_t = crate::judge::gold::EMPTY_SCORE, allow_hyphen_values = true)]
    pub unended_gold: f64,
    /// Continue the run in --out from its latest checkpoint (its settings; --iterations may be raised).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run(args: GrpoArgs) -> Result<()> {
    let mut sources = vec![Source::Model("--policy", &args.policy)];
    if let Some(r) = &args.reward {
        sources.push(Source::Model("--reward", r));
    }
    if let Some(r) = &args.reference {
        sources.push(Source::Model("--reference", r));
    }
    if args.resume && args.config.out.join("latest").is_file() {
        sources.push(Source::Model("--out (the run resumed)", &args.config.out));
    }
    let tf = ck_tok::resolve(&args.tokenizer, &sources)?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let cfg = GrpoConfig { stop_token: ct.end, pad_token: ct.pad, ..args.config };
    cfg.validate(tok.vocab_size())?;
    check::finite("--unended-gold", args.unended_gold)?;
    let mut judge = args.judge.build()?;
    if args.reward.is_none() && judge.is_none() {
        bail!("nothing scores the answers: give a reward model (--reward DIR) or a judge (--judge SPEC)");
    }
    let texts = jsonl::read_prompts(&args.prompts, false)?.records;
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let Start { policy: init, reference, prompts } =
            load_policy_and_prompts(be, &args.policy, args.reference.as_deref(), tok, &ct, &texts, cfg.max_new_tokens)?;
        let rm = args.reward.as_ref().map(|p| crate::pipeline::reward::load(be, p)).transpose()?;
        let decode = |ids: &[u32]| chat::answer_text(tok, ids, ct.end);
        let prompt_text = |ids: &[u32]| chat::prompt_text(tok, &ct, ids);
        let mut score = |pairs: &[(String, String)]| judge.as_mut().context("no judge")?.score(pairs);
        let has_judge = args.judge.judge.is_some();
        let hook =
            has_judge.then_some(GoldHook { judge: &mut score, prompt_text: &prompt_text, unended: args.unended_gold });
        let (reward, gold) = match &rm {
            Some(rm) => (Reward::Model(rm), hook),
            None => (Reward::Judge(hook.context("no judge")?), None),
        };
        let hooks = Hooks { decode: Some(&decode), gold, verbose: true, tokenizer: Some(&tf) };
        let out = cfg.out.clone();
        let s = train(be, cfg, &prompts, &init, &reference, reward, hooks, args.resume)?;
        summary(&out, &s)
    })
}

/// The run's first and last rewards and gold scores (from its whole metrics log, resumed parts included)
/// and its KL, printed and written as `summary.json`.
fn summary(out: &Path, s: &GrpoSummary) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let ends = |key: &str| {
        let v = metrics::series(&recs, "iteration", key);
        (v.first().map_or(f64::NAN, |p| p.1), v.last().map_or(f64::NAN, |p| p.1))
    };
    let (score0, score1) = ends("raw_score");
    let (gold0, gold1) = ends("gold_score");
    Summary::new("grpo", format!("GRPO done: {} iterations", s.iterations))
        .noted("score, first iteration", score0, "", "the reward model's or judge's, before penalties")
        .number("score, last iteration", score1, "")
        .noted("gold score, first scored iteration", gold0, "", "the judge on the rollouts")
        .number("gold score, last scored iteration", gold1, "")
        .noted("KL to the reference, last iteration", s.last_kl, "nats/answer", "sum over the answer's tokens")
        .plot("grpo_scores.svg")
        .plot("grpo_stats.svg")
        .line(format!("checkpoint {}", s.checkpoint.display()))
        .finish(out)
}
