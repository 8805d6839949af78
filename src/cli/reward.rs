//! `rlhf reward` (train a reward model on ranked answers) and `rlhf score` (score prompt/answer pairs).

use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::data::chat::{self, ChatFormat};
use crate::pipeline::reward::{self, RewardConfig};
use crate::util::summary::Summary;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RewardArgs {
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub config: RewardConfig,
    /// Continue the run in --out from its latest checkpoint (same data, seed and hyper-parameters).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

/// The summary's name of the held-out pairwise accuracy (read back by `rlhf iterate`).
pub const HELD_OUT_ACCURACY: &str = "held-out pairwise accuracy";

pub fn run_reward(a: RewardArgs) -> Result<()> {
    let cfg = a.config;
    cfg.validate()?;
    let dev = device::select(a.device)?;
    let s = crate::with_backend!(dev, |be| reward::train(be, &cfg, a.resume))?;
    if !s.complete {
        println!(
            "reward model paused at step {} (last train loss {:.4}); checkpoint {}; continue with --resume",
            s.steps,
            s.final_train_loss,
            s.checkpoint.display()
        );
        return Ok(());
    }
    let pairs = format!("{} pairs of {} held-out prompts", s.eval_pairs, s.eval_prompts);
    Summary::new("reward", format!("reward model done: {} steps on {} prompts", s.steps, s.train_prompts))
        .noted(HELD_OUT_ACCURACY, 100.0 * s.eval_accuracy, "%", &pairs)
        .noted(
            "held-out pairwise accuracy before training",
            100.0 * s.eval_accuracy_before,
            "%",
            "the SFT trunk with a fresh head",
        )
        .number("final train loss", s.final_train_loss, "")
        .noted("bias shift", s.bias_shift, "", "so the SFT demonstrations average 0")
        .number("malformed ranked lines left out", s.skipped_lines as f64, "")
        .number("prompts left out (all answers tie)", s.all_tied_prompts as f64, "")
        .number("malformed demonstration lines left out", s.skipped_demo_lines as f64, "")
        .plot("loss.svg")
        .line(format!("checkpoint {}", s.checkpoint.display()))
        .finish(&cfg.out)
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// A reward model checkpoint (or its run directory).
    #[arg(long)]
    pub reward: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// JSONL of {"prompt", "completion"} (or "answer") to score.
    #[arg(long)]
    pub data: PathBuf,
    /// Output JSONL (each input record with a "score" added); standard output when absent.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

pub fn run_score(a: ScoreArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.data).with_context(|| format!("cannot read {}", a.data.display()))?;
    let mut records = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", a.data.display(), i + 1))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let why = |k: &str| match v.get(k) {
            Some(x) => format!("{}:{}: field \"{k}\" is {x}, not a string", a.data.display(), i + 1),
            None => format!("{}:{}: missing \"{k}\"", a.data.display(), i + 1),
        };
        let prompt = get("prompt").with_context(|| why("prompt"))?;
        let answer = get("completion").or_else(|| get("answer")).with_context(|| {
            if v.get("completion").is_none() && v.get("answer").is_some() {
                why("answer")
            } else if v.get("completion").is_some() {
                why("completion")
            } else {
                format!("{}:{}: missing \"completion\" (or \"answer\")", a.data.display(), i + 1)
            }
        })?;
        records.push((v, prompt, answer));
    }
    let tf = ck_tok::resolve(&a.tokenizer, &[Source::Model("--reward", &a.reward)])?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let dev = device::select(a.device)?;
    let scores = crate::with_backend!(dev, |be| {
        let rm = reward::load(be, &a.reward)?;
        crate::tokenizer::check_vocab(tok.vocab_size(), rm.trunk.cfg.vocab_size, &tf.source().display().to_string())?;
        let mut pairs = vec![];
        for (_, p, ans) in &records {
            let (mut pt, mut at) = (chat::encode_prompt(tok, &ct, p)?, chat::encode_answer(tok, &ct, ans)?);
            chat::fit_context(&ct, &mut pt, &mut at, rm.trunk.cfg.n_positions);
            pairs.push((pt, at));
        }
        reward::score_all(be, &rm, &pairs, ct.pad, 16).with_context(|| format!("scoring {}", a.data.display()))
    })?;
    let mut out = String::new();
    for ((mut v, _, _), s) in records.into_iter().zip(scores) {
        v["score"] = serde_json::json!(s);
        out += &format!("{v}\n");
    }
    match &a.out {
        Some(path) => crate::util::fs::write_atomic(path, out.as_bytes())?,
        None => std::io::stdout().write_all(out.as_bytes())?,
    }
    Ok(())
}
