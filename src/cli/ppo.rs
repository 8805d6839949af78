//! `rlhf ppo`: PPO against a reward model (`crate::pipeline::ppo`).

use crate::backend::Backend;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::cli::judge::JudgeChoice;
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl;
use crate::model::Decoder;
use crate::pipeline::metrics;
use crate::pipeline::ppo::trainer::{train_from, Hooks, PpoConfig, PpoSummary};
use crate::pipeline::rollout::GoldHook;
use crate::pipeline::run::check;
use crate::tokenizer::Tokenizer;
use crate::util::summary::Summary;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct PpoArgs {
    /// The SFT model the policy starts from (and the frozen reference, unless --reference is given).
    #[arg(long)]
    pub policy: PathBuf,
    /// The frozen reference of the KL penalty (default: --policy). The loop passes the SFT model here.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// The frozen reward model; the value model starts from it too.
    #[arg(long)]
    pub reward: PathBuf,
    /// Prompts, one JSON object per line: {"prompt": "..."}.
    #[arg(long)]
    pub prompts: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    // The run's settings (saved with each checkpoint): their flags and defaults are defined there.
    #[command(flatten)]
    pub config: PpoConfig,
    /// Prepared pretraining shards (`rlhf prepare`) for PPO-ptx.
    #[arg(long)]
    pub ptx_data: Option<PathBuf>,
    /// Rows x tokens of each PPO-ptx batch.
    #[arg(long, default_value_t = 8)]
    pub ptx_batch: usize,
    #[arg(long, default_value_t = 64)]
    pub ptx_seq: usize,
    /// The gold judge scores rollouts every --gold-every iterations (the over-optimisation curve).
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

pub fn run(args: PpoArgs) -> Result<()> {
    // The tokenizer every model read records (all the same one); a resumed run's too.
    let mut sources = vec![Source::Model("--policy", &args.policy), Source::Model("--reward", &args.reward)];
    if let Some(r) = &args.reference {
        sources.push(Source::Model("--reference", r));
    }
    if args.resume && args.config.out.join("latest").is_file() {
        sources.push(Source::Model("--out (the run resumed)", &args.config.out));
    }
    let tf = ck_tok::resolve(&args.tokenizer, &sources)?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let (end, pad) = (ct.end, ct.pad);
    let cfg = PpoConfig { stop_token: end, pad_token: pad, ..args.config };
    cfg.validate(tok.vocab_size())?;
    check::at_least("--ptx-batch", args.ptx_batch as u64, 1)?;
    check::at_least("--ptx-seq", args.ptx_seq as u64, 1)?;
    let seed = cfg.seed;
    check::finite("--unended-gold", args.unended_gold)?;
    let texts = jsonl::read_prompts(&args.prompts, false)?.records;
    let ptx_data = match (&args.ptx_data, cfg.ptx_coef > 0.0) {
        (Some(d), true) => Some(
            crate::data::shards::Dataset::open(d, "train", tok.vocab_size())
                .with_context(|| format!("--ptx-data {}", d.display()))?,
        ),
        (None, true) => bail!("--ptx-coef > 0 needs --ptx-data"),
        _ => None,
    };
    let mut judge = args.judge.build()?;
    let has_judge = judge.is_some();
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let Start { policy: init, reference, prompts } =
            load_policy_and_prompts(be, &args.policy, args.reference.as_deref(), tok, &ct, &texts, cfg.max_new_tokens)?;
        let reward = crate::pipeline::reward::load(be, &args.reward)?;
        let decode = |ids: &[u32]| chat::answer_text(tok, ids, end);
        let ptx = |i: u64| -> Result<(Vec<u32>, Vec<u32>, usize, usize)> {
            let d = ptx_data.as_ref().context("no --ptx-data")?;
            let b = d.batch(seed, i, args.ptx_batch, args.ptx_seq)?;
            Ok((b.inputs, b.targets, args.ptx_batch, args.ptx_seq))
        };
        let prompt_text = |ids: &[u32]| chat::prompt_text(tok, &ct, ids);
        let mut gold = |pairs: &[(String, String)]| judge.as_mut().context("no judge")?.score(pairs);
        let hooks = Hooks {
            decode: Some(&decode),
            gold: has_judge.then_some(GoldHook {
                judge: &mut gold,
                prompt_text: &prompt_text,
                unended: args.unended_gold,
            }),
            ptx: if ptx_data.is_some() { Some(&ptx) } else { None },
            verbose: true,
            tokenizer: Some(&tf),
        };
        let out = cfg.out.clone();
        let s = train_from(be, cfg, &prompts, &init, &reference, &reward, hooks, args.resume)?;
        summary(&out, &s)
    })
}

/// What PPO and GRPO start from (see [`load_policy_and_prompts`]).
pub(crate) struct Start<B: Backend> {
    pub policy: Decoder<B>,
    pub reference: Decoder<B>,
    pub prompts: Vec<Vec<u32>>,
}

/// What PPO and GRPO start from: the policy (its vocabulary checked against the tokenizer's), the frozen
/// reference (`reference`, else a copy of the policy) and the prompts in the chat format, each cut at the
/// left where it would leave no room for `max_new_tokens` in the context (how many were cut is printed).
pub(crate) fn load_policy_and_prompts<B: Backend>(
    be: &B,
    policy: &Path,
    reference: Option<&Path>,
    tok: &Tokenizer,
    ct: &ChatFormat,
    texts: &[String],
    max_new_tokens: usize,
) -> Result<Start<B>> {
    let init = crate::checkpoint::persist::load_policy(be, policy)?;
    crate::tokenizer::check_vocab(tok.vocab_size(), init.cfg.vocab_size, &policy.display().to_string())?;
    let (prompts, cut) = chat::encode_prompts_to_sample(tok, ct, texts, init.cfg.n_positions, max_new_tokens)?;
    if cut > 0 {
        println!("{cut} of {} prompts cut at the left to fit the context with the answer", prompts.len());
    }
    let reference = match reference {
        Some(p) => crate::checkpoint::persist::load_policy(be, p)?,
        None => crate::model::scalar::clone_model(be, &init)?,
    };
    Ok(Start { policy: init, reference, prompts })
}

/// Summary names read back by `rlhf iterate`.
pub const SCORE_LAST: &str = "reward-model score, last iteration";
pub const GOLD_FIRST: &str = "gold score, first scored iteration";
pub const GOLD_LAST: &str = "gold score, last scored iteration";
pub const KL_LAST: &str = "KL to the reference, last iteration";

/// The run's first and last reward-model and gold scores (from its whole metrics log, resumed parts
/// included), its KL and coefficient, printed and written as `summary.json`.
fn summary(out: &Path, s: &PpoSummary) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let ends = |key: &str| {
        let v = metrics::series(&recs, "iteration", key);
        (v.first().map_or(f64::NAN, |p| p.1), v.last().map_or(f64::NAN, |p| p.1))
    };
    let (score0, score1) = ends("score");
    let (gold0, gold1) = ends("gold_score");
    Summary::new("ppo", format!("PPO done: {} iterations", s.iterations))
        .noted("reward-model score, first iteration", score0, "", "minus the no-<|end|> penalty")
        .number(SCORE_LAST, score1, "")
        .noted(GOLD_FIRST, gold0, "", "the judge on the rollouts")
        .number(GOLD_LAST, gold1, "")
        .noted(KL_LAST, s.last_kl, "nats/answer", "sum over the answer's tokens")
        .number("KL coefficient beta, last", s.beta, "")
        .plot("ppo_scores.svg")
        .plot("ppo_stats.svg")
        .plot("ppo_len_beta.svg")
        .line(format!("checkpoint {}", s.checkpoint.display()))
        .finish(out)
}
