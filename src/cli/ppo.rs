//! `rlhf ppo`, `rlhf label`, `rlhf eval`: PPO against a reward model, collecting ranked comparisons, and
//! held-out evaluation against the SFT model. A `--judge` is `lexicon` (the built-in gold judge) or any
//! command speaking the protocol of `crate::judge`.

use crate::cli::device::{self, DeviceArg};
use crate::data::chat::{self, ChatTokens};
use crate::data::jsonl;
use crate::model::sample::{generate, SampleConfig};
use crate::pipeline::eval;
use crate::pipeline::label;
use crate::pipeline::ppo::trainer::{train_from, Hooks, PpoConfig};
use crate::pipeline::run::check;
use crate::tokenizer::Tokenizer;
use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

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
    /// The tokenizer.json of the models.
    #[arg(long)]
    pub tokenizer: PathBuf,
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
    /// Gold judge: `lexicon` (built in) or a command (see `rlhf judge --help`); scores rollouts every
    /// --gold-every iterations, for the over-optimisation curve.
    #[arg(long)]
    pub judge: Option<String>,
    /// Continue the run in --out from its latest checkpoint (its settings; --iterations may be raised).
    #[arg(long)]
    pub resume: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

/// Text of an answer without its end token.
fn answer_text(tok: &Tokenizer, answer: &[u32], end: u32) -> String {
    let body = if answer.last() == Some(&end) { &answer[..answer.len() - 1] } else { answer };
    tok.decode(body)
}

pub fn run_ppo(args: PpoArgs) -> Result<()> {
    let tok = Tokenizer::load(&args.tokenizer)?;
    let ct = ChatTokens::from_tokenizer(&tok)?;
    let (end, pad) = (ct.end, ct.pad);
    let cfg = PpoConfig { stop_token: end, pad_token: pad, ..args.config };
    cfg.validate(tok.vocab_size())?;
    check::at_least("--ptx-batch", args.ptx_batch as u64, 1)?;
    check::at_least("--ptx-seq", args.ptx_seq as u64, 1)?;
    let seed = cfg.seed;
    let texts = jsonl::read_prompts(&args.prompts, false)?.records;
    let prompts: Vec<Vec<u32>> = texts.iter().map(|p| chat::encode_prompt(&tok, &ct, p)).collect::<Result<_>>()?;
    let ptx_data = match (&args.ptx_data, cfg.ptx_coef > 0.0) {
        (Some(d), true) => Some(
            crate::data::shards::Dataset::open(d, "train", tok.vocab_size())
                .with_context(|| format!("--ptx-data {}", d.display()))?,
        ),
        (None, true) => bail!("--ptx-coef > 0 needs --ptx-data"),
        _ => None,
    };
    let mut judge = args.judge.as_deref().map(|spec| crate::judge::from_spec(Some(spec))).transpose()?;
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let init = crate::checkpoint::persist::load_policy(be, &args.policy)?;
        crate::tokenizer::check_vocab(tok.vocab_size(), init.cfg.vocab_size, &args.policy.display().to_string())?;
        let reference = match &args.reference {
            Some(p) => crate::checkpoint::persist::load_policy(be, p)?,
            None => crate::model::scalar::clone_model(be, &init)?,
        };
        let reward = crate::pipeline::reward::load(be, &args.reward)?;
        let decode = |ids: &[u32]| answer_text(&tok, ids, end);
        let ptx = |i: u64| -> Result<(Vec<u32>, Vec<u32>, usize, usize)> {
            let d = ptx_data.as_ref().context("no --ptx-data")?;
            let b = d.batch(seed, i, args.ptx_batch, args.ptx_seq)?;
            Ok((b.inputs, b.targets, args.ptx_batch, args.ptx_seq))
        };
        let mut gold = |pairs: &[(String, String)]| judge.as_mut().context("no judge")?.score(pairs);
        let hooks = Hooks {
            decode: Some(&decode),
            gold: if args.judge.is_some() { Some(&mut gold) } else { None },
            ptx: if ptx_data.is_some() { Some(&ptx) } else { None },
            verbose: true,
        };
        let s = train_from(be, cfg, &prompts, &init, &reference, &reward, hooks, args.resume)?;
        println!(
            "ppo: {} iterations; mean score {:.4} -> {:.4}; KL to reference {:.3}; beta {:.4}; checkpoint {}",
            s.iterations,
            s.first_score,
            s.last_score,
            s.last_kl,
            s.beta,
            s.checkpoint.display()
        );
        Ok(())
    })
}

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// The policy whose answers are ranked.
    #[arg(long)]
    pub policy: PathBuf,
    /// Prompts, one JSON object per line: {"prompt": "..."}.
    #[arg(long)]
    pub prompts: PathBuf,
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Answers per prompt.
    #[arg(short, long, default_value_t = 4)]
    pub k: usize,
    /// Ranked-K JSONL, appended per record; prompts already in it are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Rank with this judge (`lexicon`, or a command) instead of asking at the terminal.
    #[arg(long)]
    pub judge: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

impl LabelArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("-k", self.k as u64, 2)?;
        check::non_negative("--temperature", self.temperature)?;
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)
    }
}

pub fn run_label(args: LabelArgs) -> Result<()> {
    args.validate()?;
    let tok = Tokenizer::load(&args.tokenizer)?;
    let ct = ChatTokens::from_tokenizer(&tok)?;
    let end = ct.end;
    let prompts = jsonl::read_prompts(&args.prompts, false)?.records;
    let mut judge = args.judge.as_deref().map(|spec| crate::judge::from_spec(Some(spec))).transpose()?;
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let policy = crate::checkpoint::persist::load_policy(be, &args.policy)?;
        crate::tokenizer::check_vocab(tok.vocab_size(), policy.cfg.vocab_size, &args.policy.display().to_string())?;
        let sc = SampleConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: 0,
            top_p: 1.0,
            stop: Some(end),
        };
        let mut gen = |p: &str| -> Result<Vec<String>> {
            // A pure function of (seed, prompt text), so a resumed session draws the same answers.
            let h = p.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
            let ids = chat::encode_prompt(&tok, &ct, p)?;
            let g = generate(be, &policy, &vec![ids; args.k], &sc, &mut Rng::stream(args.seed, h))?;
            Ok(g.iter().map(|g| answer_text(&tok, &g.tokens, end)).collect())
        };
        let mut jf = |p: &str, answers: &[String]| -> Result<Vec<f64>> {
            let pairs: Vec<(String, String)> = answers.iter().map(|a| (p.to_string(), a.clone())).collect();
            judge.as_mut().context("no judge")?.score(&pairs)
        };
        let stdin = std::io::stdin();
        let st = label::label(
            &prompts,
            args.k,
            &args.out,
            &mut gen,
            if args.judge.is_some() { Some(&mut jf) } else { None },
            &mut stdin.lock(),
            &mut std::io::stderr(),
        )?;
        println!(
            "label: {} new records in {} ({} prompts already labelled, {} skipped{})",
            st.labelled,
            args.out.display(),
            st.skipped_done,
            st.skipped_by_user,
            if st.quit { ", stopped early" } else { "" }
        );
        Ok(())
    })
}

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
    /// Gold judge (`lexicon`, or a command) for the win rate.
    #[arg(long)]
    pub judge: Option<String>,
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

pub fn run_eval(args: EvalArgs) -> Result<()> {
    args.validate()?;
    let tok = Tokenizer::load(&args.tokenizer)?;
    let ct = ChatTokens::from_tokenizer(&tok)?;
    let (end, pad) = (ct.end, ct.pad);
    let texts = jsonl::read_prompts(&args.prompts, false)?.records;
    let prompts: Vec<Vec<u32>> = texts.iter().map(|p| chat::encode_prompt(&tok, &ct, p)).collect::<Result<_>>()?;
    let mut judge = args.judge.as_deref().map(|spec| crate::judge::from_spec(Some(spec))).transpose()?;
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
        let decode = |ids: &[u32]| answer_text(&tok, ids, end);
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
            if args.judge.is_some() { Some(&mut gold) } else { None },
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
