//! The language-model training loop, written once over the backend and shared by pretraining and SFT
//! (they differ only in where batches come from and which tokens carry loss).
//!
//! One step, top to bottom:  batch(seed, step) -> zero grads -> forward -> fused weighted LM loss ->
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
use anyhow::{bail, Context, Result};
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

/// A run directory's starting point: the latest checkpoint and training state when resuming (refusing
/// when there is none), and refusing to start over a run that exists when not.
pub fn resume_point(out: &Path, resume: bool) -> Result<Option<(Checkpoint, TrainState)>> {
    match (resume, run_dir::latest(out)?) {
        (true, Some(dir)) => {
            eprintln!("resuming {} from {}", out.display(), dir.display());
            Ok(Some((checkpoint::load(&dir)?, checkpoint::load_train_state(&dir)?)))
        }
        (true, None) => bail!("--resume: {} holds no checkpoint to resume from", out.display()),
        (false, Some(_)) => {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display())
        }
        (false, None) => Ok(None),
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
    std::fs::create_dir_all(&lc.out).with_context(|| format!("creating {}", lc.out.display()))?;
    let mut log = MetricsLog::open(&lc.out.join("metrics.jsonl"), log_len)?;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut acts = Acts::new(be, &mcfg, b, t)?;
    let bar = crate::util::progress::bar(lc.steps.saturating_sub(opt.step), name);
    let (mut last_loss, mut val_loss) = (f64::NAN, f64::NAN);
    let mut last_ckpt = run_dir::latest(&lc.out)?;
    let t_start = Instant::now();
    let first_step = opt.step;
    let end = lc.stop_after.map_or(lc.steps, |s| s.min(lc.steps));
    while opt.step < end {
        let step = opt.step;
        let t0 = Instant::now();
        let batch = src.train_batch(lc.seed, step)?;
        let lr = lr_schedule(step, lc.lr, lc.min_lr, lc.warmup, lc.steps);
        grads.fill_zero(be);
        model.forward(be, &mut acts, &batch.inputs, None, None)?;
        let loss = model.lm_loss(be, &mut acts, &batch.targets, &batch.weights, 1.0, Some(&mut grads))?;
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
        let mut rec =
            json!({"step": opt.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s": (b * t) as f64 / dt});
        if opt.step % lc.eval_every == 0 || opt.step == lc.steps {
            val_loss = evaluate(be, model, &mut acts, src.eval_batches())?;
            rec["val_loss"] = json!(val_loss);
        }
        log.write(&rec)?;
        bar.set_message(format!("loss {loss:.3} val {val_loss:.3} {:.0} tok/s", (b * t) as f64 / dt));
        bar.inc(1);
        if rec.get("val_loss").is_some() {
            plot_losses(&lc.out, name, baseline)?;
        }
        if opt.step % lc.save_every == 0 || opt.step == end {
            let ckpt = Checkpoint::from_model(be, model, ModelKind::Policy);
            let state = TrainState::from_optimizer(be, &mcfg, opt, record.clone(), log.len()?);
            last_ckpt = Some(run_dir::commit_checkpoint(&lc.out, opt.step, |dir| {
                checkpoint::save(dir, &ckpt)?;
                checkpoint::save_train_state(dir, &state)
            })?);
        }
    }
    bar.finish();
    let steps_run = opt.step - first_step;
    let tokens_per_s = (steps_run as usize * b * t) as f64 / t_start.elapsed().as_secs_f64().max(1e-9);
    if steps_run == 0 {
        val_loss = evaluate(be, model, &mut acts, src.eval_batches())?;
    }
    let checkpoint = last_ckpt.context("no checkpoint was written")?;
    Ok(FitSummary { steps: opt.step, train_loss: last_loss, val_loss, checkpoint, tokens_per_s })
}

fn nan_message(what: &str, value: f64, step: u64, last: &Option<PathBuf>) -> String {
    let keep = match last {
        Some(p) => format!("the last good checkpoint is {}", p.display()),
        None => "no checkpoint had been written yet".into(),
    };
    format!("{what} became {value} at step {} (lower --lr or check the data); stopped without saving: {keep}", step + 1)
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
