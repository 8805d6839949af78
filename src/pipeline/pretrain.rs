//! Step 0: pretraining a decoder on token shards, through the language-model loop of [`super::run`].

use super::run::{
    check, fit, flag_of, refuse_changes, resume_point, setting_differences, with_extra, BatchSource, Fingerprint,
    FitSummary, LoopConfig,
};
use crate::backend::Backend;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::data::batch::LmBatch;
use crate::data::shards::Batch;
use crate::data::shards::Dataset;
use crate::model::{AdamW, AdamWConfig, Config, Decoder};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that defines a pretraining run beyond the loop's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub data: PathBuf,
    /// The tokenizer stored with the checkpoints: by default the one `prepare` copied into `data`.
    #[serde(flatten)]
    pub tokenizer: TokenizerArgs,
    pub model: Config,
    pub batch: usize,
    pub seq: usize,
    pub eval_batches: usize,
    pub run: LoopConfig,
}

impl PretrainConfig {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("--batch", self.batch as u64, 1)?;
        check::at_least("--seq", self.seq as u64, 1)?;
        check::at_least("--eval-batches", self.eval_batches as u64, 1)?;
        check::at_least("--steps", self.run.steps, 1)?;
        self.run.validate()
    }
}

/// The `rlhf pretrain` flags: every setting of a [`PretrainConfig`] a user chooses, with its default
/// written once, here ([`PretrainSettings::config`] turns them into the saved configuration).
#[derive(Clone, Debug, clap::Args)]
pub struct PretrainSettings {
    /// Directory of token shards written by `rlhf prepare` (train_*.bin, val_*.bin, meta.json).
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Run directory: metrics.jsonl, loss.svg and step-numbered checkpoints go here.
    #[arg(long, default_value = "runs/pretrain")]
    pub out: PathBuf,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Tokens per sequence (at most the model's context).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Peak learning rate (after warmup; cosine decay to --min-lr-frac of it).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The final learning rate as a fraction of --lr, in [0, 1].
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_frac: f64,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 50)]
    pub warmup: u64,
    /// AdamW decoupled weight decay (2-D weights only).
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Measure the validation loss every N steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8)]
    pub eval_batches: usize,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 250)]
    pub save_every: u64,
    /// Pause after this global step (a checkpoint is written); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Seed for initialisation and batch sampling: same seed, same run, bit for bit.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
}

impl PretrainSettings {
    /// The run's configuration for a fresh `model` (validated).
    pub fn config(self, model: Config) -> Result<PretrainConfig> {
        check::unit_closed("--min-lr-frac", self.min_lr_frac)?;
        let cfg = PretrainConfig {
            data: self.data,
            tokenizer: self.tokenizer,
            model,
            batch: self.batch,
            seq: self.seq,
            eval_batches: self.eval_batches,
            run: LoopConfig {
                out: self.out,
                steps: self.steps,
                lr: self.lr,
                min_lr: self.lr * self.min_lr_frac,
                warmup: self.warmup,
                adamw: AdamWConfig {
                    weight_decay: self.weight_decay,
                    grad_clip: self.grad_clip,
                    ..AdamWConfig::default()
                },
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

/// The result a caller (and the README's demo) reports.
#[derive(Debug, Serialize)]
pub struct PretrainSummary {
    pub fit: FitSummary,
    pub unigram_entropy: f64,
}

/// Token shards as a batch source: random windows for training, fixed consecutive windows for validation.
struct ShardBatches {
    train: Dataset,
    eval: Vec<LmBatch>,
    b: usize,
    t: usize,
}

impl BatchSource for ShardBatches {
    fn shape(&self) -> (usize, usize) {
        (self.b, self.t)
    }
    fn train_batch(&self, seed: u64, step: u64) -> Result<LmBatch> {
        let Batch { inputs, targets } = self.train.batch(seed, step, self.b, self.t)?;
        Ok(LmBatch::uniform(inputs, targets))
    }
    fn eval_batches(&self) -> &[LmBatch] {
        &self.eval
    }
}

/// What a pretraining checkpoint records beyond its [`PretrainConfig`] (extra keys of the same JSON object,
/// so runs saved before them still resume): the model it started from and a fingerprint of its data.
#[derive(Serialize, Deserialize, Default)]
struct Started {
    #[serde(default)]
    init: Option<PathBuf>,
    #[serde(default)]
    data_fingerprint: Option<String>,
}

/// The flag of a [`PretrainConfig`] setting's path.
fn flag(path: &str) -> String {
    match path {
        "run.min_lr" => "--min-lr-frac (the final learning rate --min-lr-frac x --lr)".into(),
        "run.adamw.weight_decay" | "run.adamw.grad_clip" => flag_of(path),
        p if p.starts_with("run.adamw.") => format!("the optimizer's {}", &p["run.adamw.".len()..]),
        p if p.starts_with("model.") => format!("--preset (the model's {})", &p["model.".len()..]),
        p => flag_of(p),
    }
}

/// A fingerprint of a prepared data directory: `meta.json` and every shard (name, length, contents).
fn data_fingerprint(dir: &Path) -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .filter(|n| n == "meta.json" || ((n.starts_with("train_") || n.starts_with("val_")) && n.ends_with(".bin")))
        .collect();
    names.sort();
    let mut fp = Fingerprint::new();
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).with_context(|| format!("reading {}", dir.join(&name).display()))?;
        fp.bytes(name.as_bytes());
        fp.u64(bytes.len() as u64);
        fp.bytes(&bytes);
    }
    Ok(fp.hex())
}

/// Run (or, with `resume`, continue) pretraining. `init` optionally starts from an existing model.
///
/// A resume continues in `cfg.run.out` with the run's own settings; `--steps` may be raised and
/// `--stop-after`, `--save-every` changed (neither changes a step's numbers). Any other setting that differs
/// from the run's, or data whose shards changed, is refused, naming it.
pub fn pretrain<B: Backend>(
    be: &B,
    mut cfg: PretrainConfig,
    init: Option<&Path>,
    resume: bool,
) -> Result<PretrainSummary> {
    cfg.validate()?;
    let (lock, start) = resume_point(&cfg.run.out, resume)?;
    let data_fp = data_fingerprint(&cfg.data)?;
    let mut log_len = None;
    let mut opt_state = None;
    let mut started = Started { init: init.map(Path::to_owned), data_fingerprint: Some(data_fp.clone()) };
    let mut model = match start {
        Some((ck, state)) => {
            let saved: PretrainConfig =
                serde_json::from_value(state.args.clone()).context("reading the run's saved configuration")?;
            let was: Started = serde_json::from_value(state.args.clone()).unwrap_or_default();
            // A model from --init has that model's shape, whatever --preset says.
            // The tokenizer is checked by its hash against the run's checkpoint instead (below).
            let mut allowed =
                vec!["run.out", "run.steps", "run.stop_after", "run.save_every", "tokenizer", "force_tokenizer"];
            if was.init.is_some() {
                allowed.push("model");
            }
            let diffs =
                setting_differences(&serde_json::to_value(&saved)?, &serde_json::to_value(&cfg)?, &allowed, &flag);
            refuse_changes(&cfg.run.out, &diffs)?;
            if was.data_fingerprint.as_ref().is_some_and(|f| *f != data_fp) {
                bail!(
                    "--resume: the token shards in {} changed since the run started (data fingerprint {} then, {data_fp} now); resume with the run's own data, or choose another --out",
                    cfg.data.display(),
                    was.data_fingerprint.unwrap_or_default()
                );
            }
            // The run's own settings, except how far to go, where to pause or save, and where it lives.
            let run = LoopConfig {
                out: cfg.run.out.clone(),
                steps: cfg.run.steps.max(saved.run.steps),
                stop_after: cfg.run.stop_after,
                save_every: cfg.run.save_every,
                ..saved.run.clone()
            };
            cfg = PretrainConfig { run, tokenizer: cfg.tokenizer, ..saved };
            started.init = was.init;
            log_len = Some(state.metrics_len);
            opt_state = Some(state);
            ck.to_model(be)?
        }
        None => match init {
            Some(path) => {
                let m = crate::checkpoint::persist::load_policy(be, path)?;
                cfg.model = m.cfg;
                m
            }
            None => Decoder::init(be, cfg.model, cfg.run.seed)?,
        },
    };
    let mcfg = model.cfg;
    if cfg.seq > mcfg.n_positions {
        bail!("--seq {} exceeds the model's context n_positions = {}", cfg.seq, mcfg.n_positions);
    }
    crate::data::shards::check_data_vocab(&cfg.data, mcfg.vocab_size)?;
    // The tokenizer stored with every checkpoint: the data's, the --init model's, or the resumed run's.
    let mut sources = vec![Source::Data("--data", &cfg.data)];
    if let Some(p) = init.filter(|_| opt_state.is_none()) {
        sources.push(Source::Model("--init", p));
    }
    if opt_state.is_some() {
        sources.push(Source::Model("--out (the run resumed)", &cfg.run.out));
    }
    let tokenizer = ck_tok::resolve(&cfg.tokenizer, &sources)?;
    crate::tokenizer::check_vocab(
        tokenizer.tokenizer().vocab_size(),
        mcfg.vocab_size,
        &tokenizer.source().display().to_string(),
    )?;
    let train = Dataset::open(&cfg.data, "train", mcfg.vocab_size)?;
    let val = Dataset::open(&cfg.data, "val", mcfg.vocab_size)?;
    let eval = val
        .eval_batches(cfg.batch, cfg.seq, cfg.eval_batches)?
        .into_iter()
        .map(|b| LmBatch::uniform(b.inputs, b.targets))
        .collect();
    let unigram = crate::data::shards::unigram_entropy(&val);
    let src = ShardBatches { train, eval, b: cfg.batch, t: cfg.seq };
    let mut opt = AdamW::new(be, &mcfg, cfg.run.adamw)?;
    if let Some(state) = &opt_state {
        state.restore_optimizer(be, &mcfg, &mut opt)?;
    }
    let record = with_extra(serde_json::to_value(&cfg)?, serde_json::to_value(&started)?);
    let fit = fit(
        be,
        "pretrain",
        &cfg.run,
        &mut model,
        &mut opt,
        &src,
        &record,
        &tokenizer,
        lock,
        log_len,
        Some(("unigram baseline", unigram)),
    )?;
    Ok(PretrainSummary { fit, unigram_entropy: unigram })
}
