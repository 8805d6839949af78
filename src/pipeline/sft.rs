//! Step 1: supervised fine-tuning on prompt -> answer demonstrations.
//!
//! Each example is laid out in the chat format (`crate::data::chat`) and right-padded with `<|pad|>`:
//!   tokens  = <|user|> prompt <|assistant|> answer <|end|> <|pad|> ...
//! The loss is the engine's masked cross-entropy with weight 1/(answer tokens in the batch) on the rows
//! that predict answer tokens (including `<|end|>`) and 0 on prompt and padding rows, so prompt tokens
//! carry no loss, and padding changes neither loss nor gradient (attention is causal: a row never sees
//! the padding after it). Examples are not packed, so nothing leaks between neighbours. The training loop
//! is the pretraining one (`crate::pipeline::run::fit`).

use crate::backend::Backend;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::data::batch::{epoch_order, slices, LmBatch, PaddedBatch, Pair};
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl;
use crate::model::{AdamW, AdamWConfig, Decoder};
use crate::pipeline::run::{
    self, check, flag_of, refuse_changes, setting_differences, with_extra, BatchSource, Fingerprint, FitSummary,
    LoopConfig,
};
use crate::util::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SftConfig {
    pub base: PathBuf,
    pub data: PathBuf,
    /// `--tokenizer`: by default the base model's (on a resume, the run's).
    #[serde(flatten)]
    pub tokenizer: TokenizerArgs,
    pub batch: usize,
    pub epochs: f64,
    pub eval_fraction: f64,
    pub skip_bad: bool,
    pub run: LoopConfig,
}

impl SftConfig {
    /// Refuses settings out of range, naming the flag (`run.steps` 0: from --epochs).
    pub fn validate(&self) -> Result<()> {
        check::at_least("--batch", self.batch as u64, 1)?;
        check::positive("--epochs", self.epochs)?;
        check::unit_open("--eval-fraction", self.eval_fraction)?;
        self.run.validate()
    }
}

/// The `rlhf sft` flags: every setting of an [`SftConfig`] a user chooses, with its default written once,
/// here ([`SftSettings::config`] turns them into the saved configuration).
#[derive(Clone, Debug, clap::Args)]
pub struct SftSettings {
    /// The model to fine-tune: a checkpoint, a run directory (its latest checkpoint) or a Hugging Face GPT-2 folder.
    #[arg(long)]
    pub base: PathBuf,
    /// Demonstrations, JSONL: {"prompt", "completion"} or {"messages": [{"role", "content"}, ...]}.
    #[arg(long)]
    pub data: PathBuf,
    // The tokenizer must have the chat tokens <|user|>, <|assistant|>, <|end|>, <|pad|>. A --tokenizer that
    // extends the base model's with new tokens (GPT-2's with `rlhf tokenizer gpt2 --chat`) is accepted: the
    // model's embedding grows by them.
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Run directory: metrics.jsonl, loss.svg and step-numbered checkpoints go here.
    #[arg(long, default_value = "runs/sft")]
    pub out: PathBuf,
    /// Passes over the training split (sets the number of steps).
    #[arg(long, default_value_t = 2.0)]
    pub epochs: f64,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate (after warmup; cosine decay to --min-lr-frac of it). AdamW without weight decay.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// The final learning rate as a fraction of --lr, in [0, 1].
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// Fraction of examples held out for the evaluation loss, in (0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub eval_fraction: f64,
    /// Measure the held-out loss every N steps.
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub save_every: u64,
    /// Skip (and count) malformed JSONL lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Pause after this step (a checkpoint is written); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Seed of the held-out split and the example order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl SftSettings {
    /// The run's configuration (validated); the number of steps follows from --epochs.
    pub fn config(self) -> Result<SftConfig> {
        check::unit_closed("--min-lr-frac", self.min_lr_frac)?;
        let cfg = SftConfig {
            base: self.base,
            data: self.data,
            tokenizer: self.tokenizer,
            batch: self.batch,
            epochs: self.epochs,
            eval_fraction: self.eval_fraction,
            skip_bad: self.skip_bad,
            run: LoopConfig {
                out: self.out,
                steps: 0,
                lr: self.lr,
                min_lr: self.lr * self.min_lr_frac,
                warmup: self.warmup,
                adamw: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
                eval_every: self.eval_every,
                save_every: self.save_every,
                seed: self.seed,
                stop_after: self.stop_after,
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Debug, Serialize)]
pub struct SftSummary {
    pub fit: FitSummary,
    /// Held-out answer loss of the base model, before fine-tuning.
    pub base_eval_loss: f64,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub truncated: usize,
    pub skipped: usize,
}

struct PairBatches {
    train: Vec<Pair>,
    eval: Vec<LmBatch>,
    b: usize,
    t: usize,
    pad: u32,
}

impl BatchSource for PairBatches {
    fn shape(&self) -> (usize, usize) {
        (self.b, self.t)
    }
    /// Step k takes examples k*b .. (k+1)*b of the seeded epoch order (`data::batch::epoch_order`).
    fn train_batch(&self, seed: u64, step: u64) -> Result<LmBatch> {
        let picked = epoch_order(seed, step, self.b, self.train.len()).into_iter().map(|i| &self.train[i]);
        Ok(PaddedBatch::new(&slices(picked), self.b, self.t, self.pad)?.answer_lm_batch())
    }
    fn eval_batches(&self) -> &[LmBatch] {
        &self.eval
    }
}

/// What an SFT checkpoint records beyond its [`SftConfig`] (extra keys of the same JSON object, so runs
/// saved before them still resume).
#[derive(Serialize, Deserialize, Default)]
struct Started {
    /// Of the encoded examples (held-out split first), so changed data or tokenizer is caught.
    #[serde(default)]
    data_fingerprint: Option<String>,
    /// Exact bits of the base model's held-out loss, so a resume needs no `--base`.
    #[serde(default)]
    base_eval_loss_bits: Option<u64>,
}

/// The flag of an [`SftConfig`] setting's path.
fn flag(path: &str) -> String {
    match path {
        "run.min_lr" => "--min-lr-frac (the final learning rate --min-lr-frac x --lr)".into(),
        p if p.starts_with("run.adamw.") => format!("the optimizer's {}", &p["run.adamw.".len()..]),
        p => flag_of(p),
    }
}

/// Run (or, with `resume`, continue) supervised fine-tuning.
///
/// A resume continues in `cfg.run.out` from the run's checkpoint (it needs no `--base`: the base model's
/// held-out loss is recorded); `--stop-after` and `--save-every` may change. Any other setting that differs
/// from the run's, or demonstrations (or a tokenizer) that no longer encode as when it started, is refused,
/// naming it.
pub fn sft<B: Backend>(be: &B, mut cfg: SftConfig, resume: bool) -> Result<SftSummary> {
    cfg.validate()?;
    let (lock, start) = run::resume_point(&cfg.run.out, resume)?;
    let (mut log_len, mut opt_state, mut was) = (None, None, None);
    let mut model = match start {
        Some((ck, state)) => {
            let saved: SftConfig =
                serde_json::from_value(state.args.clone()).context("reading the run's saved configuration")?;
            // `base` only serves a fresh start (the model comes from the checkpoint); steps follow from epochs;
            // the tokenizer is checked by its hash against the run's checkpoint instead (below).
            let allowed =
                ["run.out", "run.steps", "run.stop_after", "run.save_every", "base", "tokenizer", "force_tokenizer"];
            let diffs =
                setting_differences(&serde_json::to_value(&saved)?, &serde_json::to_value(&cfg)?, &allowed, &flag);
            refuse_changes(&cfg.run.out, &diffs)?;
            let run = LoopConfig {
                out: cfg.run.out.clone(),
                steps: saved.run.steps,
                stop_after: cfg.run.stop_after,
                save_every: cfg.run.save_every,
                ..saved.run.clone()
            };
            cfg = SftConfig { run, tokenizer: cfg.tokenizer, ..saved };
            was = Some(serde_json::from_value::<Started>(state.args.clone()).unwrap_or_default());
            log_len = Some(state.metrics_len);
            opt_state = Some(state);
            ck.to_model(be)?
        }
        None => crate::checkpoint::persist::load_policy(be, &cfg.base)
            .with_context(|| format!("--base {}", cfg.base.display()))?,
    };
    // The base model's tokenizer, or one that extends it (grown into the model below); a resumed run's own.
    let tok_file = match &opt_state {
        None => ck_tok::resolve_growing(&cfg.tokenizer, &[Source::Model("--base", &cfg.base)])?,
        Some(_) => ck_tok::resolve(&cfg.tokenizer, &[Source::Model("--out (the run resumed)", &cfg.run.out)])?,
    };
    let tok = tok_file.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok)?;
    if tok.vocab_size() > model.cfg.vocab_size && opt_state.is_none() && ct.max_id() as usize >= model.cfg.vocab_size {
        // A base model without the chat tokens (e.g. GPT-2 with `rlhf tokenizer gpt2 --chat`): grow it.
        eprintln!(
            "sft: growing the base model's vocabulary from {} to {} tokens for the chat tokens",
            model.cfg.vocab_size,
            tok.vocab_size()
        );
        model = model.grow_vocab(be, tok.vocab_size())?;
    }
    crate::tokenizer::check_vocab(tok.vocab_size(), model.cfg.vocab_size, &tok_file.source().display().to_string())?;
    let read = jsonl::read_sft(&cfg.data, cfg.skip_bad)?;
    let (pairs, truncated) = chat::encode_examples(tok, &ct, &read.records, model.cfg.n_positions)?;
    // Held-out split: a seeded shuffle, the first eval_fraction held out.
    let mut idx: Vec<usize> = (0..pairs.len()).collect();
    Rng::new(cfg.run.seed).shuffle(&mut idx);
    let n_eval =
        ((pairs.len() as f64 * cfg.eval_fraction).round() as usize).clamp(1, pairs.len().saturating_sub(1).max(1));
    if pairs.len() < 2 {
        bail!("{} holds {} example(s): SFT needs at least 2 (one held out)", cfg.data.display(), pairs.len());
    }
    let eval_pairs: Vec<Pair> = idx[..n_eval].iter().map(|&i| pairs[i].clone()).collect();
    let train_pairs: Vec<Pair> = idx[n_eval..].iter().map(|&i| pairs[i].clone()).collect();
    let t = pairs.iter().map(|(p, a)| p.len() + a.len()).max().unwrap();
    let eval = eval_pairs
        .chunks(cfg.batch)
        .map(|c| Ok(PaddedBatch::new(&slices(c), cfg.batch, t, ct.pad)?.answer_lm_batch()))
        .collect::<Result<Vec<_>>>()?;
    if cfg.run.steps == 0 {
        cfg.run.steps = ((cfg.epochs * train_pairs.len() as f64) / cfg.batch as f64).ceil().max(1.0) as u64;
    }
    let mut fp = Fingerprint::new();
    fp.u64(t as u64);
    fp.tokens(eval_pairs.iter().chain(&train_pairs).flat_map(|(p, a)| [p.as_slice(), a.as_slice()]));
    let data_fingerprint = fp.hex();
    if let Some(f) = was.as_ref().and_then(|w| w.data_fingerprint.as_ref()) {
        if *f != data_fingerprint {
            bail!(
                "--resume: the demonstrations in {} (with {}) no longer encode as when the run started (data fingerprint {f} then, {data_fingerprint} now); resume with the run's own data and tokenizer, or choose another --out",
                cfg.data.display(),
                tok_file.source().display()
            );
        }
    }
    let src = PairBatches { train: train_pairs, eval, b: cfg.batch, t, pad: ct.pad };
    let base_eval_loss = match was.as_ref().and_then(|w| w.base_eval_loss_bits) {
        Some(bits) => f64::from_bits(bits),
        None => {
            let measure = || -> Result<f64> {
                let base = base_model(be, &cfg, &model)?;
                let mut acts = crate::model::Acts::new(be, &base.cfg, cfg.batch, t)?;
                run::evaluate(be, &base, &mut acts, src.eval_batches())
            };
            match (measure(), &was) {
                (Ok(loss), _) => loss,
                (Err(e), Some(_)) => {
                    // A run saved before the base loss was recorded, whose base is gone: only the report lacks it.
                    eprintln!("sft: the base model's held-out loss is not reported ({e:#})");
                    f64::NAN
                }
                (Err(e), None) => return Err(e),
            }
        }
    };
    let mut opt = AdamW::new(be, &model.cfg, cfg.run.adamw)?;
    if let Some(state) = &opt_state {
        state.restore_optimizer(be, &model.cfg, &mut opt)?;
    }
    let started =
        Started { data_fingerprint: Some(data_fingerprint), base_eval_loss_bits: Some(base_eval_loss.to_bits()) };
    let record = with_extra(serde_json::to_value(&cfg)?, serde_json::to_value(&started)?);
    let fit = run::fit(
        be,
        "sft",
        &cfg.run,
        &mut model,
        &mut opt,
        &src,
        &record,
        &tok_file,
        lock,
        log_len,
        Some(("base model (held out)", base_eval_loss)),
    )?;
    Ok(SftSummary {
        fit,
        base_eval_loss,
        train_examples: src.train.len(),
        eval_examples: n_eval,
        truncated,
        skipped: read.skipped,
    })
}

/// The base model (reloaded when resuming, where `model` is already fine-tuned).
fn base_model<B: Backend>(be: &B, cfg: &SftConfig, model: &Decoder<B>) -> Result<Decoder<B>> {
    let mut base = crate::checkpoint::persist::load_policy(be, Path::new(&cfg.base))?;
    if base.cfg.vocab_size < model.cfg.vocab_size {
        base = base.grow_vocab(be, model.cfg.vocab_size)?;
    }
    if base.cfg != model.cfg {
        bail!("--base {} has another shape than the run's model", cfg.base.display());
    }
    Ok(base)
}
