//! Pretraining: the language-model loop, written once over the backend.
//!
//! One step, top to bottom:  batch(seed, step) -> zero grads -> forward -> fused LM loss -> backward ->
//! global-norm clip + AdamW at the scheduled learning rate. Every `eval_every` steps the validation loss
//! is measured on fixed batches; every `save_every` steps (and at the end) a checkpoint with the full
//! training state is committed. Batches are a pure function of (seed, step), and the model, moments and
//! step are restored exactly, so a resumed run is bit-identical to one that never stopped.

use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, ModelKind, TrainState};
use crate::data::{Batch, Dataset};
use crate::metrics::{self, MetricsLog};
use crate::model::{Acts, AdamW, AdamWConfig, Config, Gpt2, Tensors};
use crate::ops::adamw::lr_schedule;
use crate::run_dir;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a pretraining run (saved with each checkpoint; `--resume` restores it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub data: PathBuf,
    pub out: PathBuf,
    pub model: Config,
    pub batch: usize,
    pub seq: usize,
    pub steps: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub adamw: AdamWConfig,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub save_every: u64,
    pub seed: u64,
    /// End this invocation (with a checkpoint) once this global step is reached; `--resume` continues.
    #[serde(default)]
    pub stop_after: Option<u64>,
}

/// The result a caller (and the README's demo) reports.
#[derive(Debug, Serialize)]
pub struct PretrainSummary {
    pub steps: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub unigram_entropy: f64,
    pub checkpoint: PathBuf,
    pub tokens_per_s: f64,
}

/// Mean loss over the fixed validation batches.
pub fn evaluate<B: Backend>(be: &B, model: &Gpt2<B>, acts: &mut Acts<B>, batches: &[Batch]) -> Result<f64> {
    let n = acts.b * acts.t;
    let weights = vec![1.0 / n as f32; n];
    let mut total = 0.0;
    for batch in batches {
        model.forward(be, acts, &batch.inputs, None, None)?;
        total += model.lm_loss(be, acts, &batch.targets, &weights, 1.0, None)?;
    }
    Ok(total / batches.len().max(1) as f64)
}

/// Save model + optimizer state as a complete checkpoint of the run.
fn save<B: Backend>(be: &B, cfg: &PretrainConfig, model: &Gpt2<B>, opt: &AdamW<B>, log: &MetricsLog) -> Result<PathBuf> {
    let ckpt = Checkpoint::from_model(be, model, ModelKind::Policy);
    let state = TrainState::from_optimizer(be, &model.cfg, opt, serde_json::to_value(cfg)?, log.len()?);
    run_dir::commit_checkpoint(&cfg.out, opt.step, |dir| {
        checkpoint::save(dir, &ckpt)?;
        checkpoint::save_train_state(dir, &state)
    })
}

/// Run (or, with `resume`, continue) pretraining. `init` optionally starts from an existing model.
pub fn pretrain<B: Backend>(be: &B, mut cfg: PretrainConfig, init: Option<&Path>, resume: bool) -> Result<PretrainSummary> {
    let mut start_model = None;
    let mut opt_state = None;
    let mut log_len = None;
    if resume {
        let dir = run_dir::latest(&cfg.out)?.with_context(|| format!("--resume: {} holds no checkpoint to resume from", cfg.out.display()))?;
        let state = checkpoint::load_train_state(&dir)?;
        let saved: PretrainConfig = serde_json::from_value(state.args.clone()).context("reading the run's saved configuration")?;
        // The run's own settings win, except how far to go and where to pause.
        cfg = PretrainConfig { steps: cfg.steps.max(saved.steps), stop_after: cfg.stop_after, ..saved };
        log_len = Some(state.metrics_len);
        start_model = Some(checkpoint::load(&dir)?);
        opt_state = Some(state);
        eprintln!("resuming {} from {}", cfg.out.display(), dir.display());
    } else {
        if run_dir::latest(&cfg.out)?.is_some() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", cfg.out.display());
        }
        if let Some(path) = init {
            let ck = checkpoint::load(&run_dir::resolve_checkpoint(path)?)?;
            ck.expect_kind(ModelKind::Policy, &path.display().to_string())?;
            cfg.model = ck.config;
            start_model = Some(ck);
        }
    }
    let mcfg = cfg.model;
    if cfg.seq > mcfg.n_positions {
        bail!("--seq {} exceeds the model's context n_positions = {}", cfg.seq, mcfg.n_positions);
    }
    let train = Dataset::open(&cfg.data, "train", mcfg.vocab_size)?;
    let val = Dataset::open(&cfg.data, "val", mcfg.vocab_size)?;
    let val_batches = val.eval_batches(cfg.batch, cfg.seq, cfg.eval_batches)?;
    let unigram = crate::data::unigram_entropy(&val);

    let mut model = match &start_model {
        Some(ck) => ck.to_model(be)?,
        None => Gpt2::init(be, mcfg, cfg.seed)?,
    };
    let mut opt = AdamW::new(be, &mcfg, cfg.adamw)?;
    if let Some(state) = &opt_state {
        state.restore_optimizer(be, &mcfg, &mut opt)?;
    }
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let mut log = MetricsLog::open(&cfg.out.join("metrics.jsonl"), log_len)?;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut acts = Acts::new(be, &mcfg, cfg.batch, cfg.seq)?;
    let n = cfg.batch * cfg.seq;
    let weights = vec![1.0 / n as f32; n];

    let bar = crate::progress::bar(cfg.steps.saturating_sub(opt.step), "pretrain");
    let (mut last_loss, mut val_loss) = (f64::NAN, f64::NAN);
    let mut last_ckpt = run_dir::latest(&cfg.out)?;
    let t_start = Instant::now();
    let first_step = opt.step;
    let end = cfg.stop_after.map_or(cfg.steps, |s| s.min(cfg.steps));
    while opt.step < end {
        let step = opt.step;
        let t0 = Instant::now();
        let batch = train.batch(cfg.seed, step, cfg.batch, cfg.seq)?;
        let lr = lr_schedule(step, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps);
        grads.fill_zero(be);
        model.forward(be, &mut acts, &batch.inputs, None, None)?;
        let loss = model.lm_loss(be, &mut acts, &batch.targets, &weights, 1.0, Some(&mut grads))?;
        if !loss.is_finite() {
            bail!("{}", nan_message("loss", loss, step, &last_ckpt));
        }
        model.backward(be, &mut acts, &mut grads);
        let norm = opt.update(be, &mut model.params, &grads, lr);
        if !norm.is_finite() {
            bail!("{}", nan_message("gradient norm", norm, step, &last_ckpt));
        }
        last_loss = loss;
        let dt = t0.elapsed().as_secs_f64();
        let mut rec = json!({"step": opt.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": n as f64 / dt});
        if opt.step % cfg.eval_every == 0 || opt.step == cfg.steps {
            val_loss = evaluate(be, &model, &mut acts, &val_batches)?;
            rec["val_loss"] = json!(val_loss);
        }
        log.write(&rec)?;
        bar.set_message(format!("loss {loss:.3} val {val_loss:.3} {:.0} tok/s", n as f64 / dt));
        bar.inc(1);
        if rec.get("val_loss").is_some() {
            plot_losses(&cfg.out, unigram)?;
        }
        if opt.step % cfg.save_every == 0 || opt.step == end {
            last_ckpt = Some(save(be, &cfg, &model, &opt, &log)?);
        }
    }
    bar.finish();
    let steps_run = opt.step - first_step;
    let tokens_per_s = (steps_run as usize * n) as f64 / t_start.elapsed().as_secs_f64().max(1e-9);
    if steps_run == 0 {
        val_loss = evaluate(be, &model, &mut acts, &val_batches)?;
    }
    let checkpoint = last_ckpt.context("no checkpoint was written")?;
    Ok(PretrainSummary { steps: opt.step, train_loss: last_loss, val_loss, unigram_entropy: unigram, checkpoint, tokens_per_s })
}

fn nan_message(what: &str, value: f64, step: u64, last: &Option<PathBuf>) -> String {
    let keep = match last {
        Some(p) => format!("the last good checkpoint is {}", p.display()),
        None => "no checkpoint had been written yet".into(),
    };
    format!("{what} became {value} at step {} (lower --lr or check the data); stopped without saving: {keep}", step + 1)
}

/// Redraw `loss.svg` from the metrics log, with the unigram baseline as a reference line.
fn plot_losses(out: &Path, unigram: f64) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let train = metrics::series(&recs, "step", "loss");
    let val = metrics::series(&recs, "step", "val_loss");
    let last = train.last().map_or(1.0, |p| p.0);
    let base = vec![(0.0, unigram), (last, unigram)];
    let svg = metrics::svg_plot("pretraining loss (nats/token)", "step", &[("train", train), ("val", val), ("unigram baseline", base)]);
    metrics::write_plot(&out.join("loss.svg"), &svg)
}
