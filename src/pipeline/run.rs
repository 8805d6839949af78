//! What every training loop shares, and the language-model loop itself.
//!
//! [`Run`] is the scaffold that pretraining, SFT, the reward model and PPO drive their loops through: where
//! a run starts (a fresh directory, or the latest checkpoint with `--resume`, each refusing the other's
//! case), the lock that keeps a second run out of the folder, the metrics log (cut back to the checkpoint's
//! length on resume, emptied on a fresh start), the progress bar, the checkpoint cadence and commits, and
//! the one error a run stops with, naming the step and the last good checkpoint (a non-finite loss,
//! gradient norm, or weights after an update).
//!
//! A resumed run must be bit-identical to one that never stopped, so every step records what it was
//! started with (its settings, and fingerprints of its data and models) and refuses a resume that changes
//! any of it, naming each setting: [`setting_differences`], [`refuse_changes`], [`Fingerprint`].
//!
//! [`fit`] is the language-model loop shared by pretraining and SFT (they differ only in where batches
//! come from and which tokens carry loss). One step, top to bottom:  batch(seed, step) -> zero grads -> forward -> fused weighted LM loss ->
//! backward -> global-norm clip + AdamW at the scheduled learning rate. Every `eval_every` steps the
//! validation loss is measured on fixed batches; every `save_every` steps (and at the end) a checkpoint with
//! the full training state is committed. Batches are a pure function of (seed, step), and the model,
//! moments and step are restored exactly, so a resumed run is bit-identical to one that never stopped.

use crate::backend::Backend;
use crate::checkpoint::run_dir::{self, RunLock};
use crate::checkpoint::{self, Checkpoint, ModelKind, TrainState};
use crate::data::batch::LmBatch;
use crate::data::preference::Group;
use crate::model::{Acts, AdamW, AdamWConfig, Decoder, Tensors};
use crate::ops::adamw::lr_schedule;
use crate::pipeline::metrics::{self, MetricsLog};
use crate::tokenizer::TokenizerFile;
use crate::util::plot::{Figure, Panel};
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
pub fn evaluate<B: Backend>(be: &B, model: &Decoder<B>, acts: &mut Acts<B>, batches: &[LmBatch]) -> Result<f64> {
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
    _lock: RunLock,
}

impl Run {
    /// Claim `out` (see [`RunLock`]) and find the checkpoint a run continues from: the latest one of `out`
    /// with `resume` (refused when there is none), else nothing (refused when `out` already holds a run).
    /// The claim is held until the [`Run`] opened with it ends.
    pub fn start_point(out: &Path, resume: bool) -> Result<(RunLock, Option<PathBuf>)> {
        if resume && !out.is_dir() {
            bail!("--resume: {} holds no checkpoint to resume from (it does not exist)", out.display());
        }
        let lock = RunLock::acquire(out)?;
        match (resume, run_dir::latest(out)?) {
            (true, Some(dir)) => {
                if !out.join("latest").is_file() {
                    eprintln!(
                        "{} has no `latest` (the run was killed before recording its first checkpoint); {} is complete",
                        out.display(),
                        dir.display()
                    );
                }
                eprintln!("resuming {} from {}", out.display(), dir.display());
                Ok((lock, Some(dir)))
            }
            (true, None) => bail!("--resume: {} holds no checkpoint to resume from", out.display()),
            (false, Some(_)) => {
                bail!("{} already holds a run; pass --resume to continue it or choose another --out", out.display())
            }
            (false, None) => Ok((lock, None)),
        }
    }

    /// Open `out` (claimed by `lock`, from [`Run::start_point`]) for training; `log_len` cuts the metrics log
    /// back to a resumed checkpoint's length, `None` (a fresh run) empties it. `steps_left` sizes the
    /// progress bar (hidden when `quiet`).
    pub fn open(
        lock: RunLock,
        out: &Path,
        name: &str,
        log_len: Option<u64>,
        steps_left: u64,
        quiet: bool,
    ) -> Result<Run> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let log = MetricsLog::open(&out.join("metrics.jsonl"), Some(log_len.unwrap_or(0)))?;
        let bar = if quiet { ProgressBar::hidden() } else { crate::util::progress::bar(steps_left, name) };
        let last_ckpt = run_dir::latest(out)?;
        Ok(Run { out: out.to_owned(), name: name.to_owned(), log, bar, last_ckpt, _lock: lock })
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

    /// After an AdamW update of `model` at step `step`: the error the run stops with when the gradient norm
    /// or an updated weight is not finite (`name` names the model in the message).
    pub fn check_update<B: Backend>(
        &self,
        be: &B,
        step: u64,
        norm: f64,
        model: &Decoder<B>,
        name: &str,
        lr: f64,
    ) -> Result<()> {
        if !norm.is_finite() {
            let what = format!("the gradient norm became {norm} (lower --lr or check the data)");
            return Err(self.stopped("step", step, what));
        }
        if let Err(sq) = finite_weights(be, &model.params.bufs) {
            return Err(self.stopped("step", step, non_finite_weights(name, lr, sq, "--lr")));
        }
        Ok(())
    }

    /// Commit a policy checkpoint of `opt`'s step: the model with `tokenizer`, and the full training state
    /// (moments, step, metrics length) with `args`, the command's own record.
    pub fn commit_policy<B: Backend>(
        &mut self,
        be: &B,
        model: &Decoder<B>,
        opt: &AdamW<B>,
        args: Value,
        tokenizer: Option<&TokenizerFile>,
    ) -> Result<PathBuf> {
        let ckpt = Checkpoint::from_model(be, model, ModelKind::Policy);
        let state = TrainState::from_optimizer(be, &model.cfg, opt, args, self.metrics_len()?);
        self.commit(opt.step, |dir| {
            checkpoint::save(dir, &ckpt, tokenizer)?;
            checkpoint::save_train_state(dir, &state)
        })
    }

    /// End the loop: the newest checkpoint.
    pub fn finish(self) -> Result<PathBuf> {
        self.bar.finish();
        self.last_ckpt.context("no checkpoint was written")
    }
}

/// A language-model run's starting point: the claim on `out` and, with `resume`, the latest checkpoint and
/// its training state (see [`Run::start_point`]).
pub fn resume_point(out: &Path, resume: bool) -> Result<(RunLock, Option<(Checkpoint, TrainState)>)> {
    match Run::start_point(out, resume)? {
        (lock, Some(dir)) => Ok((lock, Some((checkpoint::load(&dir)?, checkpoint::load_train_state(&dir)?)))),
        (lock, None) => Ok((lock, None)),
    }
}

/// `Err(sum of squares)` when a weight of `bufs` is not finite, in one reduction: the sum of the squares
/// is finite exactly when every weight is (squares of f32 values summed in f64 cannot overflow).
pub fn finite_weights<B: Backend>(be: &B, bufs: &[B::Buf]) -> std::result::Result<(), f64> {
    let sq = be.sum_squares_all(bufs);
    if sq.is_finite() {
        Ok(())
    } else {
        Err(sq)
    }
}

/// As [`finite_weights`], for a scalar head (its weight column and bias).
pub fn finite_head<B: Backend>(be: &B, head: &crate::model::ScalarHead<B>) -> std::result::Result<(), f64> {
    let sq = be.sum_squares(&head.w) + be.sum_squares(&head.b);
    if sq.is_finite() {
        Ok(())
    } else {
        Err(sq)
    }
}

/// What [`Run::stopped`] says when an update at learning rate `lr` left non-finite weights (`sq`: their sum
/// of squares).
pub fn non_finite_weights(model: &str, lr: f64, sq: f64, flag: &str) -> String {
    format!("the update at learning rate {lr} made the {model} weights non-finite (sum of squares {sq}); lower {flag}")
}

/// The settings of a resumed run that differ from the ones it was started with, each as "FLAG: SAVED in the
/// run, GIVEN now". `saved` and `given` are the two configurations as JSON; nested objects are compared
/// leaf by leaf under dotted paths (e.g. `run.lr`), numbers up to JSON's last-digit rounding. Paths in
/// `allowed` (and everything under them) are skipped; `flag` names the setting of a path.
pub fn setting_differences(
    saved: &Value,
    given: &Value,
    allowed: &[&str],
    flag: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let mut out = vec![];
    diff_values("", saved, given, allowed, flag, &mut out);
    out
}

fn diff_values(
    path: &str,
    a: &Value,
    b: &Value,
    allowed: &[&str],
    flag: &dyn Fn(&str) -> String,
    out: &mut Vec<String>,
) {
    if allowed.contains(&path) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))).collect();
            keys.sort();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                let null = Value::Null;
                diff_values(&p, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), allowed, flag, out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| same_number(x, y)) => {}
        _ if a == b => {}
        _ => out.push(format!("{}: {a} in the run, {b} now", flag(path))),
    }
}

/// Equal up to the last digit a JSON round trip may change.
fn same_number(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
}

/// The flag of a setting's path by the usual rule: its last part, `--` and dashes (`run.min_lr` ->
/// `--min-lr`).
pub fn flag_of(path: &str) -> String {
    format!("--{}", path.rsplit('.').next().unwrap_or(path).replace('_', "-"))
}

/// `config`'s JSON object with the keys of `extra` added (what a run records beside its configuration, read
/// back with `#[serde(default)]` fields so that runs saved before them still resume).
pub fn with_extra(mut config: Value, extra: Value) -> Value {
    if let (Some(c), Value::Object(e)) = (config.as_object_mut(), extra) {
        c.extend(e);
    }
    config
}

/// Refuse a resume of `out` whose settings differ from the run's (`diffs`, from [`setting_differences`]).
pub fn refuse_changes(out: &Path, diffs: &[String]) -> Result<()> {
    if diffs.is_empty() {
        return Ok(());
    }
    bail!(
        "--resume: {} was started with other settings ({}); a resumed run must be bit-identical to one that never stopped: resume with the run's own data, seed and hyper-parameters, or choose another --out",
        out.display(),
        diffs.join("; ")
    )
}

/// A 64-bit FNV-1a hash of what a run was started with (data, models), so a resume can tell whether it
/// changed. Fed in little-endian 64-bit words ([`Fingerprint::u64`]) or bytes.
#[derive(Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// A model's weights: shape and every value's bits.
    pub fn model<B: Backend>(&mut self, be: &B, model: &Decoder<B>) {
        for (spec, data) in model.to_host(be) {
            self.bytes(spec.name.as_bytes());
            self.u64(data.len() as u64);
            data.iter().for_each(|x| self.bytes(&x.to_bits().to_le_bytes()));
        }
    }

    /// Token sequences: each one's length and ids.
    pub fn tokens<'a>(&mut self, seqs: impl IntoIterator<Item = &'a [u32]>) {
        for s in seqs {
            self.u64(s.len() as u64);
            s.iter().for_each(|&t| self.u64(t as u64));
        }
    }

    /// Encoded preference groups: their tokens, lengths and (better, worse) pairs.
    pub fn groups<'a>(groups: impl Iterator<Item = &'a Group>) -> String {
        let mut fp = Fingerprint::new();
        for g in groups {
            fp.u64(g.pairs.len() as u64);
            for (p, a) in &g.pairs {
                fp.u64(p.len() as u64);
                p.iter().chain(a).for_each(|&t| fp.u64(t as u64));
                fp.u64(a.len() as u64);
            }
            g.better_worse.iter().for_each(|&(w, l)| fp.u64(((w as u64) << 32) | l as u64));
        }
        fp.hex()
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The loop, top to bottom: batch(seed, step) -> zero grads -> forward -> fused weighted LM loss ->
/// backward -> global-norm clip + AdamW at the scheduled learning rate; validation loss every `eval_every`
/// steps, a checkpoint with the full training state (and `record`, the command's own settings) every
/// `save_every` steps and at the end. A non-finite loss, gradient norm or updated weight stops without
/// saving. `lock` is the claim on the run folder from [`resume_point`]; `tokenizer` is stored with every
/// checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn fit<B: Backend>(
    be: &B,
    name: &str,
    lc: &LoopConfig,
    model: &mut Decoder<B>,
    opt: &mut AdamW<B>,
    src: &dyn BatchSource,
    record: &Value,
    tokenizer: &TokenizerFile,
    lock: RunLock,
    log_len: Option<u64>,
    baseline: Option<(&str, f64)>,
) -> Result<FitSummary> {
    let mcfg = model.cfg;
    let (b, t) = src.shape();
    let end = lc.stop_after.map_or(lc.steps, |s| s.min(lc.steps));
    let mut run = Run::open(lock, &lc.out, name, log_len, end.saturating_sub(opt.step), false)?;
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
        run.check_update(be, step + 1, norm, model, "model's", lr)?;
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
            run.commit_policy(be, model, opt, record.clone(), Some(tokenizer))?;
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
    let mut panel = Panel::new("loss (nats/token)").line("train", train).dotted_line("validation", val);
    if let Some((label, y)) = baseline {
        panel = panel.level(label, y, 0.0, last);
    }
    Figure::new(&format!("{name}: loss"), "step").whole_x().panel(panel).write(&out.join("loss.svg"))
}
