//! What every training loop shares, and the language-model loop itself.
//!
//! [`Run`] is the scaffold that pretraining, SFT, the reward model and PPO drive their loops through: where
//! a run starts (a fresh directory, or the latest checkpoint with `--resume`, each refusing the other's
//! case), the metrics log (cut back to the checkpoint's length on resume), the progress bar, the checkpoint
//! cadence and commits, and the one error a run stops with, naming the step and the last good checkpoint.
//!
//! [`fit`] is the language-model loop shared by pretraining and SFT (they differ only in where batches
//! come from and which tokens carry loss). One step, top to bottom:  batch(seed, step) -> zero grads -> forward -> fused weighted LM loss ->
//! backward -> global-norm clip + AdamW at the scheduled learning rate. Every `eval_every` steps the
//! validation loss is measured on fixed batches; every `save_every` steps (and at the end) a checkpoint with
//! the full training state is committed. Batches are a pure function of (seed, step), and the model,
//! moments and step are restored exactly, so a resumed run is bit-identical to one that never stopped.

use crate::backend::Backend;
use crate::checkpoint::run_dir;
use crate::checkpoint::{self, Checkpoint, ModelKind, TrainState};
use crate::data::batch::LmBatch;
use crate::model::{Acts, AdamW, AdamWConfig, Gpt2, Tensors};
use crate::ops::adamw::lr_schedule;
use crate::pipeline::metrics::{self, MetricsLog};
use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The settings every training loop shares (saved with each checkpoint; `--resume` restores them).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Run directory.
    pub out: PathBuf,
    /// Total optimizer steps.
    pub steps: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub adamw: AdamWConfig,
    pub eval_every: u64,
    pub save_every: u64,
    pub seed: u64,
    /// End this invocation (with a checkpoint) once this global step is reached; `--resume` continues.
    #[serde(default)]
    pub stop_after: Option<u64>,
}

impl LoopConfig {
    /// Refuses settings out of range, naming the flag (`steps` is the caller's: 0 may mean "from epochs").
    pub fn validate(&self) -> Result<()> {
        check::positive("--lr", self.lr)?;
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.lr) {
            bail!(
                "the final learning rate (--min-lr-frac x --lr) must be in [0, --lr {}] (got {})",
                self.lr,
                self.min_lr
            );
        }
        check::non_negative("--weight-decay", self.adamw.weight_decay)?;
        check::non_negative("--grad-clip", self.adamw.grad_clip)?;
        check::at_least("--eval-every", self.eval_every, 1)?;
        check::at_least("--save-every", self.save_every, 1)?;
        if let Some(s) = self.stop_after {
            check::at_least("--stop-after", s, 1)?;
        }
        Ok(())
    }
}

/// The defaults of a clap settings struct, read from its `#[arg(default_value_t = ...)]` attributes, so
/// that a config's library constructor and its command-line flags share one definition.
pub fn flag_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let matches = cmd.try_get_matches_from(std::iter::empty::<String>()).expect("every setting has a default");
    T::from_arg_matches(&matches).expect("the defaults parse")
}

/// Refusals of settings out of range, each naming its flag and the value given.
pub mod check {
    use anyhow::{bail, Result};

    pub fn at_least(flag: &str, value: u64, min: u64) -> Result<()> {
        if value < min {
            bail!("{flag} must be at least {min} (got {value})");
        }
        Ok(())
    }

    pub fn finite(flag: &str, value: f64) -> Result<()> {
        if !value.is_finite() {
            bail!("{flag} must be a finite number (got {value})");
        }
        Ok(())
    }

    pub fn positive(flag: &str, value: f64) -> Result<()> {
        if !(value.is_finite() && value > 0.0) {
            bail!("{flag} must be a positive finite number (got {value})");
        }
        Ok(())
    }

    pub fn non_negative(flag: &str, value: f64) -> Result<()> {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{flag} must be a finite number >= 0 (got {value})");
        }
        Ok(())
    }

    /// In [0, 1].
    pub fn unit_closed(flag: &str, value: f64) -> Result<()> {
        if !(0.0..=1.0).contains(&value) {
            bail!("{flag} must be in [0, 1] (got {value})");
        }
        Ok(())
    }

    /// In (0, 1), e.g. a held-out fraction (both parts non-empty).
    pub fn unit_open(flag: &str, value: f64) -> Result<()> {
        if !(value > 0.0 && value < 1.0) {
            bail!("{flag} must be in (0, 1) (got {value})");
        }
        Ok(())
    }
}

/// Where a training loop gets its batches: the training batch of a step is a pure function of
/// (seed, step), so a resumed run sees exactly the batches the unbroken run would have.
pub trait BatchSource {
    /// (B, T) of every batch.
    fn shape(&self) -> (usize, usize);
    fn train_batch(&self, seed: u64, step: u64) -> Result<LmBatch>;
    /// Fixed validation batches.
    fn eval_batches(&self) -> &[LmBatch];
}

/// What a training loop reports.
#[derive(Debug, Serialize)]
pub struct FitSummary {
    pub steps: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub checkpoint: PathBuf,
    pub tokens_per_s: f64,
}

/// Mean weighted loss over fixed batches.
pub fn evaluate<B: Backend>(be: &B, model: &Gpt2<B>, acts: &mut Acts<B>, batches: &[LmBatch]) -> Result<f64> {
    let mut total = 0.0;
    for batch in batches {
        model.forward(be, acts, &batch.inputs, None, None)?;
        total += model.lm_loss(be, acts, &batch.targets, &batch.weights, 1.0, None)?;
    }
    Ok(total / batches.len().max(1) as f64)
}

/// A run directory being trained into (see the module doc).
pub struct Run {
    out: PathBuf,
    name: String,
    log: MetricsLog,
    bar: ProgressBar,
    last_ckpt: Option<PathBuf>,
}

impl Run {
    /// The checkpoint a run continues from: the latest one of `out` with `resume` (refused when there is
    /// none), else nothing (refused when `out` already holds a run).
    pub fn start_point(out: &Path, resume: bool) -> Result<Option<PathBuf>> {
        match (resume, run_dir::latest(out)?) {
            (true, Some(dir)) => {
                eprintln!("resuming {} from {}", out.display(), dir.display());
                Ok(Some(dir))
            }
            (true, None) => bail!("--resume: {} holds no checkpoint to resume from", out.display()),
            (false, Some(_)) => {
                bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display())
            }
            (false, None) => Ok(None),
        }
    }

    /// Open `out` for training (created if missing); `log_len` cuts the metrics log back to a resumed
    /// checkpoint's length. `steps_left` sizes the progress bar (hidden when `quiet`).
    pub fn open(out: &Path, name: &str, log_len: Option<u64>, steps_left: u64, quiet: bool) -> Result<Run> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let log = MetricsLog::open(&out.join("metrics.jsonl"), log_len)?;
        let bar = if quiet { ProgressBar::hidden() } else { crate::util::progress::bar(steps_left, name) };
        Ok(Run { out: out.to_owned(), name: name.to_owned(), log, bar, last_ckpt: run_dir::latest(out)? })
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Append one record to `metrics.jsonl`.
    pub fn log(&mut self, record: &Value) -> Result<()> {
        self.log.write(record)
    }

    /// Length of the metrics log in bytes (stored with a checkpoint, so a resume cuts back to it).
    pub fn metrics_len(&self) -> Result<u64> {
        self.log.len_bytes()
    }

    /// One step done: advance the progress bar with `message`.
    pub fn tick(&self, message: String) {
        self.bar.set_message(message);
        self.bar.inc(1);
    }

    /// Whether `step` (just completed) gets a checkpoint: every `every` steps and at `end`.
    pub fn save_due(step: u64, every: u64, end: u64) -> bool {
        step.is_multiple_of(every) || step == end
    }

    /// Commit the checkpoint of `step` (written by `write` into a fresh folder) and make it `latest`.
    pub fn commit(&mut self, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
        let dir = run_dir::commit_checkpoint(&self.out, step, write)?;
        self.last_ckpt = Some(dir.clone());
        Ok(dir)
    }

    /// The error a run stops with at `unit` `n` (e.g. "step 7"): what went wrong and which checkpoint is
    /// the last good one (nothing is saved over it).
    pub fn stopped(&self, unit: &str, n: u64, what: impl std::fmt::Display) -> anyhow::Error {
        let keep = match &self.last_ckpt {
            Some(p) => format!("the last good checkpoint is kept: {}", p.display()),
            None => "no checkpoint had been written yet".into(),
        };
        anyhow!("{} stopped at {unit} {n}: {what}; nothing was saved: {keep}", self.name)
    }

    /// End the loop: the newest checkpoint.
    pub fn finish(self) -> Result<PathBuf> {
        self.bar.finish();
        self.last_ckpt.context("no checkpoint was written")
    }
}

/// A language-model run's starting point: the latest checkpoint and its training state with `resume`
/// (see [`Run::start_point`]).
pub fn resume_point(out: &Path, resume: bool) -> Result<Option<(Checkpoint, TrainState)>> {
    match Run::start_point(out, resume)? {
        Some(dir) => Ok(Some((checkpoint::load(&dir)?, checkpoint::load_train_state(&dir)?))),
        None => Ok(None),
    }
}

/// The loop, top to bottom: batch(seed, step) -> zero grads -> forward -> fused weighted LM loss ->
/// backward -> global-norm clip + AdamW at the scheduled learning rate; validation loss every `eval_every`
/// steps, a checkpoint with the full training state (and `record`, the command's own settings) every
/// `save_every` steps and at the end. A non-finite loss or gradient norm stops without saving.
#[allow(clippy::too_many_arguments)]
pub fn fit<B: Backend>(
    be: &B,
    name: &str,
    lc: &LoopConfig,
    model: &mut Gpt2<B>,
    opt: &mut AdamW<B>,
    src: &dyn BatchSource,
    record: &Value,
    log_len: Option<u64>,
    baseline: Option<(&str, f64)>,
) -> Result<FitSummary> {
    let mcfg = model.cfg;
    let (b, t) = src.shape();
    let end = lc.stop_after.map_or(lc.steps, |s| s.min(lc.steps));
    let mut run = Run::open(&lc.out, name, log_len, end.saturating_sub(opt.step), false)?;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut acts = Acts::new(be, &mcfg, b, t)?;
    let (mut last_loss, mut val_loss) = (f64::NAN, f64::NAN);
    let t_start = Instant::now();
    let first_step = opt.step;
    while opt.step < end {
        let step = opt.step;
        let t0 = Instant::now();
        let batch = src.train_batch(lc.seed, step)?;
        let lr = lr_schedule(step, lc.lr, lc.min_lr, lc.warmup, lc.steps);
        grads.fill_zero(be);
        model.forward(be, &mut acts, &batch.inputs, None, None)?;
        let loss = model.lm_loss(be, &mut acts, &batch.targets, &batch.weights, 1.0, Some(&mut grads))?;
        if !loss.is_finite() {
            return Err(run.stopped(
                "step",
                step + 1,
                format!("the loss became {loss} (lower --lr or check the data)"),
            ));
        }
        model.backward(be, &mut acts, &mut grads);
        let norm = opt.update(be, &mut model.params, &grads, lr);
        if !norm.is_finite() {
            let what = format!("the gradient norm became {norm} (lower --lr or check the data)");
            return Err(run.stopped("step", step + 1, what));
        }
        last_loss = loss;
        let dt = t0.elapsed().as_secs_f64();
        let mut rec =
            json!({"step": opt.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": (b * t) as f64 / dt});
        if opt.step.is_multiple_of(lc.eval_every) || opt.step == lc.steps {
            val_loss = evaluate(be, model, &mut acts, src.eval_batches())?;
            rec["val_loss"] = json!(val_loss);
        }
        run.log(&rec)?;
        run.tick(format!("loss {loss:.3} val {val_loss:.3} {:.0} tok/s", (b * t) as f64 / dt));
        if rec.get("val_loss").is_some() {
            plot_losses(&lc.out, name, baseline)?;
        }
        if Run::save_due(opt.step, lc.save_every, end) {
            let ckpt = Checkpoint::from_model(be, model, ModelKind::Policy);
            let state = TrainState::from_optimizer(be, &mcfg, opt, record.clone(), run.metrics_len()?);
            run.commit(opt.step, |dir| {
                checkpoint::save(dir, &ckpt)?;
                checkpoint::save_train_state(dir, &state)
            })?;
        }
    }
    let steps_run = opt.step - first_step;
    let tokens_per_s = (steps_run as usize * b * t) as f64 / t_start.elapsed().as_secs_f64().max(1e-9);
    if steps_run == 0 {
        val_loss = evaluate(be, model, &mut acts, src.eval_batches())?;
    }
    let checkpoint = run.finish()?;
    Ok(FitSummary { steps: opt.step, train_loss: last_loss, val_loss, checkpoint, tokens_per_s })
}

/// Redraw `loss.svg` from the metrics log, with an optional reference line (e.g. the unigram baseline).
fn plot_losses(out: &Path, name: &str, baseline: Option<(&str, f64)>) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let train = metrics::series(&recs, "step", "loss");
    let val = metrics::series(&recs, "step", "val_loss");
    let last = train.last().map_or(1.0, |p| p.0);
    let mut series = vec![("train", train), ("val", val)];
    if let Some((label, y)) = baseline {
        series.push((label, vec![(0.0, y), (last, y)]));
    }
    let svg = metrics::svg_plot(&format!("{name} loss (nats/token)"), "step", &series);
    metrics::write_plot(&out.join("loss.svg"), &svg)
}
