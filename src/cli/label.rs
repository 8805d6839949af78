//! `rlhf label`: K answers per prompt from a policy, ranked at the terminal or by a judge
//! (`crate::pipeline::label`), into ranked-K JSONL.

use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::cli::device::{self, DeviceArg};
use crate::cli::judge::JudgeChoice;
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl;
use crate::model::sample::{generate, SampleConfig};
use crate::pipeline::label;
use crate::pipeline::run::check;
use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// The policy whose answers are ranked.
    #[arg(long)]
    pub policy: PathBuf,
    /// Prompts, one JSON object per line: {"prompt": "..."}.
    #[arg(long)]
    pub prompts: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Answers per prompt.
    #[arg(short, long, default_value_t = 4)]
    pub k: usize,
    /// Ranked-K JSONL, appended per record; prompts already in it are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// With a judge, answers are ranked by it instead of at the terminal.
    #[command(flatten)]
    pub judge: JudgeChoice,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Prompts sampled together (their K answers each are the rows of one batch).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

impl LabelArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("-k", self.k as u64, 2)?;
        check::at_least("--batch", self.batch as u64, 1)?;
        check::non_negative("--temperature", self.temperature)?;
        check::at_least("--max-new-tokens", self.max_new_tokens as u64, 1)
    }
}

pub fn run(args: LabelArgs) -> Result<()> {
    args.validate()?;
    let tf = ck_tok::resolve(&args.tokenizer, &[Source::Model("--policy", &args.policy)])?;
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    let end = ct.end;
    let prompts = jsonl::read_prompts(&args.prompts, false)?.records;
    let mut judge = args.judge.build()?;
    let has_judge = judge.is_some();
    let dev = device::select(args.device)?;
    crate::with_backend!(dev, |be| {
        let policy = crate::checkpoint::persist::load_policy(be, &args.policy)?;
        if args.max_new_tokens + ct.min_prompt() > policy.cfg.n_positions {
            bail!(
                "--max-new-tokens {} leaves no room for a prompt in the context of {}",
                args.max_new_tokens,
                policy.cfg.n_positions
            );
        }
        crate::tokenizer::check_vocab(tok.vocab_size(), policy.cfg.vocab_size, &args.policy.display().to_string())?;
        let sc = SampleConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: 0,
            top_p: 1.0,
            stop: Some(end),
        };
        let mut gen = |batch: &[&str]| -> Result<Vec<Vec<label::Answer>>> {
            let mut ids = Vec::with_capacity(batch.len() * args.k);
            let mut rngs = Vec::with_capacity(batch.len() * args.k);
            for p in batch {
                // Answer j to a prompt draws from its own stream, a pure function of (seed, prompt text, j), so
                // a resumed session (whose batches hold other prompts) draws the same answers.
                let h = p.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
                let mut prompt = chat::encode_prompt(tok, &ct, p)?;
                chat::fit_prompt(&ct, &mut prompt, policy.cfg.n_positions - args.max_new_tokens);
                for j in 0..args.k {
                    ids.push(prompt.clone());
                    rngs.push(Rng::stream(args.seed ^ h, j as u64));
                }
            }
            let g = generate(be, &policy, &ids, &sc, &mut rngs)?;
            let answers: Vec<label::Answer> = g
                .iter()
                .map(|g| label::Answer { text: chat::answer_text(tok, &g.tokens, end), ended: g.ended })
                .collect();
            Ok(answers.chunks(args.k).map(<[label::Answer]>::to_vec).collect())
        };
        let mut jf =
            |items: &[(String, String)]| -> Result<Vec<f64>> { judge.as_mut().context("no judge")?.score(items) };
        let stdin = std::io::stdin();
        let st = label::label(
            &prompts,
            args.k,
            args.batch,
            &args.out,
            &mut gen,
            if has_judge { Some(&mut jf) } else { None },
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
