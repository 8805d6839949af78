//! `rlhf iterate`: InstructGPT's steps 2 and 3 repeated: the current policy's answers are ranked, the
//! reward model is retrained on every label so far, and PPO continues against it, KL-anchored to the SFT
//! model. One resumable command over `label`, `reward` and `ppo`, run exactly as those commands run.
//!
//! Round 1 (folder OUT/round-1) is PPO from the SFT model against the given reward model. Round r >= 2:
//!   1. `label`: K answers per reward-model prompt from round r-1's policy, as long as PPO's answers (one
//!      --max-new-tokens for both), ranked by the judge -> round-r/labels.jsonl;
//!   2. `reward`: warm-started from round r-1's reward model, on the initial labels and every round's
//!      (round-r/labels-all.jsonl), normalised so the SFT demonstrations score 0 (--sft-data), its pairwise
//!      accuracy held out on prompts that no round trained on (the reward step holds prompts out by a hash of
//!      their text) -> round-r/reward;
//!   3. `ppo`: from round r-1's policy against round r's reward model, the SFT model as the reference, on
//!      its own prompts (--ppo-prompts, disjoint from the reward model's) -> round-r/ppo.
//!
//! Rerun the same command to continue: a step whose summary.json exists is done and skipped, a run folder
//! without one resumes (--resume), and labelling continues where it stopped.

use crate::checkpoint::tokenizer::TokenizerArgs;
use crate::cli::judge::{JudgeChoice, DEFAULT_JUDGE};
use crate::cli::{label, ppo, reward};
use crate::util::summary::{Summary, SUMMARY_FILE};
use crate::util::table::Table;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct IterateArgs {
    /// The SFT model: round 1's starting policy and every round's KL reference.
    #[arg(long)]
    pub sft: PathBuf,
    /// The reward model round 1 optimises against (trained on --labels).
    #[arg(long)]
    pub reward: PathBuf,
    /// The ranked-K labels --reward was trained on; every retraining keeps them.
    #[arg(long)]
    pub labels: PathBuf,
    /// Prompts whose answers are ranked for the reward model, {"prompt": ...} per line.
    #[arg(long)]
    pub rm_prompts: PathBuf,
    /// Prompts PPO samples from (keep them disjoint from --rm-prompts).
    #[arg(long)]
    pub ppo_prompts: PathBuf,
    /// SFT demonstrations: each reward model's bias is shifted so they score 0 on average.
    #[arg(long)]
    pub sft_data: PathBuf,
    /// Passed to every step, which checks it against the models it reads.
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// The folder of the rounds (OUT/round-1, ...) and of the loop's summary.
    #[arg(long, default_value = "runs/iterate")]
    pub out: PathBuf,
    /// Rounds in all (raise it and rerun to add rounds).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// PPO iterations per round.
    #[arg(long, default_value_t = 20)]
    pub iterations: u64,
    /// Answers ranked per prompt.
    #[arg(short, long, default_value_t = 4)]
    pub k: usize,
    /// Longest answer, in tokens, of both the ranked answers and PPO's rollouts.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Ranks the answers (and scores PPO's rollouts for the gold curve); default: the built-in gold judge.
    #[command(flatten)]
    pub judge: JudgeChoice,
    /// Further flags for every `rlhf reward` run, as one string (e.g. "--epochs 2 --lr 1e-3").
    #[arg(long, default_value = "--skip-bad", allow_hyphen_values = true)]
    pub reward_args: String,
    /// Further flags for every `rlhf ppo` run, as one string (e.g. "--init-kl-coef 0.2 --horizon 1000").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub ppo_args: String,
    #[arg(long, value_enum, default_value_t = crate::cli::device::DeviceArg::Auto)]
    pub device: crate::cli::device::DeviceArg,
}

/// Parses `args` as subcommand `name`'s flags, exactly as the command line would.
fn parse<T: clap::Args + clap::FromArgMatches>(name: &'static str, args: &[String]) -> Result<T> {
    let cmd = T::augment_args(clap::Command::new(name).no_binary_name(true));
    let m = cmd.try_get_matches_from(args).with_context(|| format!("rlhf {name} {}", args.join(" ")))?;
    Ok(T::from_arg_matches(&m)?)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `--resume` when `dir` holds a run that did not finish; `None` when it finished (its summary exists).
fn resume_flag(dir: &Path) -> Option<Vec<String>> {
    if dir.join(SUMMARY_FILE).is_file() {
        None
    } else if dir.join("latest").exists() {
        Some(vec!["--resume".into()])
    } else {
        Some(vec![])
    }
}

/// `round-r/labels-all.jsonl`: the initial labels then rounds 2..=r's, written atomically.
fn gather_labels(a: &IterateArgs, r: u32) -> Result<PathBuf> {
    let mut all = std::fs::read_to_string(&a.labels).with_context(|| format!("cannot read {}", a.labels.display()))?;
    for q in 2..=r {
        let f = a.out.join(format!("round-{q}/labels.jsonl"));
        let text = std::fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        if !all.is_empty() && !all.ends_with('\n') {
            all.push('\n');
        }
        all += &text;
    }
    let path = a.out.join(format!("round-{r}/labels-all.jsonl"));
    crate::util::fs::write_atomic(&path, all.as_bytes())?;
    Ok(path)
}

pub fn run(a: IterateArgs) -> Result<()> {
    if a.rounds == 0 {
        bail!("--rounds must be at least 1 (got 0)");
    }
    let judge = a.judge.judge.clone().unwrap_or(DEFAULT_JUDGE.into());
    let judge_flags = ["--judge".to_string(), judge, "--judge-timeout".into(), a.judge.judge_timeout.to_string()];
    let device_name = clap::ValueEnum::to_possible_value(&a.device).map(|v| v.get_name().to_string());
    let device = ["--device".to_string(), device_name.unwrap_or("auto".into())];
    let mut tokenizer: Vec<String> = a.tokenizer.tokenizer.iter().flat_map(|t| ["--tokenizer".into(), s(t)]).collect();
    if a.tokenizer.force_tokenizer {
        tokenizer.push("--force-tokenizer".into());
    }
    let common =
        |v: Vec<String>| -> Vec<String> { v.into_iter().chain(tokenizer.clone()).chain(device.clone()).collect() };
    let (mut policy, mut rm) = (a.sft.clone(), a.reward.clone());
    for r in 1..=a.rounds {
        let dir = a.out.join(format!("round-{r}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if r >= 2 {
            println!("== round {r}: {} answers per prompt from {} ranked by the judge", a.k, policy.display());
            let labels = dir.join("labels.jsonl");
            let mut v = vec!["--policy".into(), s(&policy), "--prompts".into(), s(&a.rm_prompts)];
            v.extend(["-k".into(), a.k.to_string(), "--max-new-tokens".into(), a.max_new_tokens.to_string()]);
            v.extend(["--seed".into(), (7 + r as u64).to_string(), "--out".into(), s(&labels)]);
            v.extend(judge_flags.iter().cloned());
            label::run(parse("label", &common(v))?)?;

            let out = dir.join("reward");
            if let Some(resume) = resume_flag(&out) {
                let data = gather_labels(&a, r)?;
                println!("== round {r}: reward model from {} on {}", rm.display(), data.display());
                let mut v =
                    vec!["--base".into(), s(&rm), "--data".into(), s(&data), "--sft-data".into(), s(&a.sft_data)];
                v.extend(["--out".into(), s(&out)]);
                v.extend(a.reward_args.split_whitespace().map(String::from));
                v.extend(resume);
                reward::run_reward(parse("reward", &common(v))?)?;
            }
            rm = out;
        }
        let out = dir.join("ppo");
        if let Some(resume) = resume_flag(&out) {
            println!("== round {r}: PPO from {} against {}", policy.display(), rm.display());
            let mut v = vec!["--policy".into(), s(&policy), "--reference".into(), s(&a.sft), "--reward".into(), s(&rm)];
            v.extend(["--prompts".into(), s(&a.ppo_prompts), "--out".into(), s(&out)]);
            v.extend(["--iterations".into(), a.iterations.to_string()]);
            v.extend(["--max-new-tokens".into(), a.max_new_tokens.to_string()]);
            v.extend(judge_flags.iter().cloned());
            v.extend(a.ppo_args.split_whitespace().map(String::from));
            v.extend(resume);
            ppo::run(parse("ppo", &common(v))?)?;
        }
        policy = out;
    }
    let summary = summary(&a)?;
    summary.tables.iter().for_each(|t| println!("{}", t.to_markdown()));
    summary.finish(&a.out)?;
    println!("final policy: {}", policy.display());
    Ok(())
}

/// One row per round: the reward model it optimised against (held-out accuracy) and its PPO run's scores.
fn summary(a: &IterateArgs) -> Result<Summary> {
    let mut t = Table::new(
        "Rounds: the reward model each PPO run optimised and where it ended",
        &[
            "round",
            "reward model",
            "held-out pairwise accuracy",
            "RM score (last)",
            "gold (first -> last)",
            "KL to SFT (last)",
        ],
    );
    let mut rm = a.reward.clone();
    for r in 1..=a.rounds {
        let dir = a.out.join(format!("round-{r}"));
        if r >= 2 {
            rm = dir.join("reward");
        }
        let rm_sum = Summary::read(&rm)?;
        let ppo_sum = Summary::read(&dir.join("ppo"))?.with_context(|| format!("{}: no PPO summary", dir.display()))?;
        let get = |s: &Summary, name: &str| s.get(name).map_or("-".into(), |n| n.value_text());
        let acc = rm_sum.as_ref().map_or("-".into(), |s| get(s, reward::HELD_OUT_ACCURACY) + "%");
        t.row(vec![
            r.to_string(),
            rm.display().to_string(),
            acc,
            get(&ppo_sum, ppo::SCORE_LAST),
            format!("{} -> {}", get(&ppo_sum, ppo::GOLD_FIRST), get(&ppo_sum, ppo::GOLD_LAST)),
            get(&ppo_sum, ppo::KL_LAST),
        ]);
    }
    Ok(Summary::new("iterate", format!("iterated RLHF: {} rounds of {} PPO iterations", a.rounds, a.iterations))
        .table(t))
}
