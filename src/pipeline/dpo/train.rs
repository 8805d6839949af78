//! `rlhf dpo`: the policy trained on preference data directly, against the frozen reference (the SFT
//! model, or `--reference`): no reward model, no value model, no sampling.
//!
//! One step, top to bottom (a batch is `--prompts-per-step` prompts, all K answers of each as rows):
//!   batch(seed, step) -> forward [rows, T] -> log pi(y|x) = sum of each answer's token log-probs (the
//!   fused cross-entropy with zero weights) -> z_y = log pi(y|x) - log ref(y|x) (cached) -> per prompt
//!   the preference loss over its untied pairs ([`super::math`]), the batch's loss their mean ->
//!   -dL/dz_y as the weight of every token of y in the same cross-entropy, now with gradients -> backward
//!   -> global-norm clip + AdamW (no weight decay) at the scheduled learning rate.
//! The reference's sequence log-probs are computed once at the start and kept with the run
//! ([`super::reference`]). Every `--eval-every` steps (and at the end) the held-out prompts' loss,
//! preference accuracy (implicit rewards beta z_y ordered as labelled) and margin are measured.
//! A step's prompts are a pure function of (seed, step) and the model, moments and step are restored
//! exactly, so `--resume` is bit-identical to a run that never stopped; a changed setting, data file or
//! tokenizer is refused, naming it.

use super::math::{preference_loss, PreferenceLoss, PreferenceStats};
use super::reference::{self, SeqLogprobs};
use crate::backend::Backend;
use crate::checkpoint;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::data::batch::{epoch_order, slices, PaddedBatch};
use crate::data::chat::ChatFormat;
use crate::data::preference::{Group, Preferences};
use crate::model::logprobs::answer_logprobs;
use crate::model::{Acts, AdamW, AdamWConfig, Decoder, Tensors};
use crate::ops::adamw::lr_schedule;
use crate::pipeline::metrics;
use crate::pipeline::run::{check, flag_of, refuse_changes, resume_point, setting_differences, Fingerprint, Run};
use crate::util::plot::{Figure, Panel};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Which preference loss `--loss` names.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossName {
    /// -log sigmoid(beta h) (Rafailov et al. 2023); with --label-smoothing, conservative DPO.
    Sigmoid,
    /// (h - 1/(2 beta))^2 (IPO, Azar et al. 2023).
    Ipo,
}

/// Everything that defines a DPO run (saved with each checkpoint; `--resume` checks it). Its fields are
/// also the `rlhf dpo` flags, each default written once, here.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct DpoConfig {
    /// The policy to start from: the SFT model (a checkpoint or a run directory).
    #[arg(long)]
    pub base: PathBuf,
    /// The frozen reference the log-ratios are taken against (default: --base).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Preferences, JSONL: {"prompt", "chosen", "rejected"} or {"prompt", "completions": [K], "ranking": [K]}
    /// (rank 0 = best; every untied pair of a prompt is used, the prompt's loss is their mean).
    #[arg(long)]
    pub data: PathBuf,
    // --tokenizer / --force-tokenizer: by default the base model's (on a resume, the run's).
    #[command(flatten)]
    #[serde(flatten)]
    pub tokenizer: TokenizerArgs,
    /// Run directory: metrics.jsonl, loss.svg, the reference log-probs and step-numbered checkpoints.
    #[arg(long, default_value = "runs/dpo")]
    pub out: PathBuf,
    /// The loss: sigmoid (DPO; conservative DPO with --label-smoothing) or ipo.
    #[arg(long, value_enum, default_value_t = LossName::Sigmoid)]
    pub loss: LossName,
    /// beta: how far the policy may move from the reference (smaller: further). IPO's tau.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Probability that a label is flipped, in [0, 0.5) (conservative DPO; 0 = plain DPO). Sigmoid loss only.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Prompts per step (all K answers of each in one batch).
    #[arg(long, default_value_t = 8)]
    pub prompts_per_step: usize,
    /// Passes over the training prompts (sets the number of steps).
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Peak learning rate (warmup over the first tenth of the steps, cosine decay to a tenth of it).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Fraction of prompts held out for the preference accuracy, in (0, 1), chosen by a hash of the
    /// prompt's text (as the reward model's: the same prompts are held out in both).
    #[arg(long, default_value_t = 0.15)]
    pub eval_fraction: f64,
    /// Measure the held-out loss and accuracy every N steps (and at the end).
    #[arg(long, default_value_t = 25)]
    pub eval_every: u64,
    /// Save a checkpoint (policy, moments, step) every N steps; the last step always.
    #[arg(long, default_value_t = 50)]
    pub save_every: u64,
    /// Pause after this step (a checkpoint is written); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Skip (and count) malformed JSONL lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Seed of the held-out split and the prompt order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl DpoConfig {
    /// The loss with its coefficient.
    pub fn kind(&self) -> PreferenceLoss {
        match self.loss {
            LossName::Sigmoid => PreferenceLoss::Sigmoid { beta: self.beta, eps: self.label_smoothing },
            LossName::Ipo => PreferenceLoss::Ipo { tau: self.beta },
        }
    }

    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        self.kind().validate()?;
        if self.loss == LossName::Ipo && self.label_smoothing != 0.0 {
            bail!("--label-smoothing applies to --loss sigmoid only");
        }
        check::at_least("--prompts-per-step", self.prompts_per_step as u64, 1)?;
        check::positive("--epochs", self.epochs)?;
        check::positive("--lr", self.lr)?;
        check::unit_open("--eval-fraction", self.eval_fraction)?;
        check::at_least("--eval-every", self.eval_every, 1)?;
        check::at_least("--save-every", self.save_every, 1)?;
        if let Some(s) = self.stop_after {
            check::at_least("--stop-after", s, 1)?;
        }
        Ok(())
    }
}

/// Means over pairs of one or more prompts' [`PreferenceStats`] (the loss: a mean over prompts).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PreferenceMeans {
    pub loss: f64,
    pub accuracy: f64,
    pub margin: f64,
    pub chosen_logratio: f64,
    pub rejected_logratio: f64,
    pub pairs: usize,
    #[serde(skip)]
    prompts: usize,
}

impl PreferenceMeans {
    fn add(&mut self, s: &PreferenceStats) {
        let (n, k) = (self.pairs as f64, s.pairs as f64);
        let mix = |a: f64, b: f64| (a * n + b * k) / (n + k);
        self.accuracy = mix(self.accuracy, s.accuracy);
        self.margin = mix(self.margin, s.margin);
        self.chosen_logratio = mix(self.chosen_logratio, s.chosen_logratio);
        self.rejected_logratio = mix(self.rejected_logratio, s.rejected_logratio);
        self.loss = (self.loss * self.prompts as f64 + s.loss) / (self.prompts + 1) as f64;
        self.pairs += s.pairs;
        self.prompts += 1;
    }

    /// As metrics-log fields, each name prefixed (`""` or `"eval_"`).
    fn fields(&self, prefix: &str, rec: &mut Value) {
        let v = serde_json::to_value(self).expect("plain numbers");
        for (k, x) in v.as_object().expect("a struct") {
            rec[format!("{prefix}{k}")] = x.clone();
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DpoSummary {
    pub steps: u64,
    pub train_prompts: usize,
    pub eval_prompts: usize,
    pub eval_pairs: usize,
    pub skipped_lines: usize,
    pub all_tied_prompts: usize,
    /// The last held-out measurement (at the last step of a complete run; NaN before the first).
    pub eval: PreferenceMeans,
    pub final_train_loss: f64,
    pub checkpoint: PathBuf,
    /// False when the run paused at `stop_after` (`--resume` continues).
    pub complete: bool,
}

/// What a checkpoint's training state records (its `args`).
#[derive(Serialize, Deserialize)]
struct RunRecord {
    config: DpoConfig,
    /// Total steps of the run.
    steps: u64,
    /// Of the encoded preferences (held-out split first), so changed data or tokenizer is caught.
    data_fingerprint: String,
    /// Count and fingerprint of the cached reference log-probs.
    reference: (u64, String),
    last_loss_bits: u64,
}

/// The settings a resume must share with the run: all but where it lives, when it saves or pauses, and
/// the models it started from (only a fresh start reads them: the policy is the checkpoint's, the
/// reference's log-probs are cached).
fn config_differences(saved: &DpoConfig, given: &DpoConfig) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(saved)?, serde_json::to_value(given)?);
    let allowed = ["out", "save_every", "stop_after", "tokenizer", "force_tokenizer", "base", "reference"];
    Ok(setting_differences(&a, &b, &allowed, &flag_of))
}

/// Held-out loss, accuracy and margins of `model` over `groups`, against their reference log-probs.
fn evaluate<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    groups: &[Group],
    refs: &SeqLogprobs,
    kind: PreferenceLoss,
    pad: u32,
) -> Result<PreferenceMeans> {
    let policy = SeqLogprobs::of(be, model, groups, pad, 16)?;
    let mut m = PreferenceMeans::default();
    for ((g, lp), r) in groups.iter().zip(&policy.0).zip(&refs.0) {
        let z: Vec<f64> = lp.iter().zip(r).map(|(a, b)| a - b).collect();
        m.add(&preference_loss(&z, &g.better_worse, kind)?);
    }
    Ok(m)
}

/// Train (or, with `resume`, continue) a policy with DPO.
pub fn dpo<B: Backend>(be: &B, cfg: &DpoConfig, resume: bool) -> Result<DpoSummary> {
    cfg.validate()?;
    let kind = cfg.kind();
    let (lock, start) = resume_point(&cfg.out, resume)?;
    let (mut model, saved) = match start {
        Some((ck, state)) => {
            let rec: RunRecord = serde_json::from_value(state.args.clone())
                .with_context(|| format!("{}: not a DPO run's training state", cfg.out.display()))?;
            if state.step >= rec.steps {
                bail!(
                    "--resume: the DPO run in {} is complete ({} steps); nothing to resume",
                    cfg.out.display(),
                    rec.steps
                );
            }
            refuse_changes(&cfg.out, &config_differences(&rec.config, cfg)?)?;
            (ck.to_model(be)?, Some((state, rec)))
        }
        None => (
            checkpoint::persist::load_policy(be, &cfg.base)
                .with_context(|| format!("--base {}", cfg.base.display()))?,
            None,
        ),
    };
    let mcfg = model.cfg;
    let mut sources = vec![];
    match (&saved, &cfg.reference) {
        (Some(_), _) => sources.push(Source::Model("--out (the run resumed)", &cfg.out)),
        (None, r) => {
            sources.push(Source::Model("--base", &cfg.base));
            if let Some(r) = r {
                sources.push(Source::Model("--reference", r));
            }
        }
    }
    let tok_file = ck_tok::resolve(&cfg.tokenizer, &sources)?;
    let tok = tok_file.tokenizer();
    crate::tokenizer::check_vocab(tok.vocab_size(), mcfg.vocab_size, &tok_file.source().display().to_string())?;
    let ct = ChatFormat::from_tokenizer(tok)?;
    let data = Preferences::load(&cfg.data, cfg.skip_bad, tok, &ct, mcfg.n_positions, cfg.eval_fraction, cfg.seed)?;
    let (t, k_max) = data.widths();
    let data_fingerprint = Fingerprint::groups(data.eval.iter().chain(&data.train));
    let steps = ((cfg.epochs * data.train.len() as f64) / cfg.prompts_per_step as f64).ceil().max(1.0) as u64;

    let hp = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let mut opt = AdamW::new(be, &mcfg, hp)?;
    let (ref_eval, ref_train, mut last_loss, log_len) = match &saved {
        Some((state, rec)) => {
            if rec.data_fingerprint != data_fingerprint || rec.steps != steps {
                bail!(
                    "--resume: the preferences in {} (with {}) no longer encode as when the run started; resume with the run's own data and tokenizer, or choose another --out",
                    cfg.data.display(),
                    tok_file.source().display()
                );
            }
            state.restore_optimizer(be, &mcfg, &mut opt)?;
            let (e, tr) = reference::load(&cfg.out, &data.eval, &data.train, &rec.reference)?;
            (e, tr, f64::from_bits(rec.last_loss_bits), Some(state.metrics_len))
        }
        None => {
            let reference = match &cfg.reference {
                Some(p) => {
                    let r = checkpoint::persist::load_policy(be, p)
                        .with_context(|| format!("--reference {}", p.display()))?;
                    if r.cfg != mcfg {
                        bail!("--reference {} has another shape than --base {}", p.display(), cfg.base.display());
                    }
                    Some(r)
                }
                None => None,
            };
            let r = reference.as_ref().unwrap_or(&model);
            let e = SeqLogprobs::of(be, r, &data.eval, ct.pad, 16)?;
            let tr = SeqLogprobs::of(be, r, &data.train, ct.pad, 16)?;
            (e, tr, f64::NAN, None)
        }
    };
    let ref_fingerprint = SeqLogprobs::fingerprint(&ref_eval, &ref_train);
    let record = |last_loss: f64| RunRecord {
        config: cfg.clone(),
        steps,
        data_fingerprint: data_fingerprint.clone(),
        reference: ref_fingerprint.clone(),
        last_loss_bits: last_loss.to_bits(),
    };
    let end = cfg.stop_after.map_or(steps, |s| s.min(steps));
    let mut run = Run::open(lock, &cfg.out, "dpo", log_len, end.saturating_sub(opt.step), false)?;
    if saved.is_none() {
        reference::save(&cfg.out, &ref_eval, &ref_train)?;
    }
    let rows = cfg.prompts_per_step * k_max;
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut acts = Acts::new(be, &mcfg, rows, t)?;
    let mut eval = PreferenceMeans { loss: f64::NAN, accuracy: f64::NAN, margin: f64::NAN, ..Default::default() };
    while opt.step < end {
        let step = opt.step;
        let picked = epoch_order(cfg.seed, step, cfg.prompts_per_step, data.train.len());
        let sb = PaddedBatch::new(&slices(picked.iter().flat_map(|&i| data.train[i].pairs.iter())), rows, t, ct.pad)?;
        grads.fill_zero(be);
        let logp = answer_logprobs(be, &model, &mut acts, &sb, 1.0)?;
        // Per prompt: z_y = log pi(y|x) - log ref(y|x), its loss, dL/dz_y (scaled by 1/prompts: the batch's
        // loss is their mean).
        let (mut train, mut dz, mut row) = (PreferenceMeans::default(), Vec::with_capacity(logp.len()), 0);
        for &i in &picked {
            let g = &data.train[i];
            let z: Vec<f64> =
                (0..g.pairs.len()).map(|j| logp[row + j].iter().sum::<f64>() - ref_train.0[i][j]).collect();
            let s = preference_loss(&z, &g.better_worse, kind)?;
            dz.extend(s.grad.iter().map(|d| d / picked.len() as f64));
            train.add(&s);
            row += g.pairs.len();
        }
        let loss = train.loss;
        if !loss.is_finite() {
            return Err(run.stopped(
                "step",
                step + 1,
                format!("the loss became {loss} (lower --lr or check the data)"),
            ));
        }
        // lm_loss's per-token loss is -log p, so every token of answer y carries the weight -dL/dz_y.
        let per_token: Vec<Vec<f64>> = sb.answer_len.iter().zip(&dz).map(|(&n, &d)| vec![-d; n]).collect();
        let weights: Vec<f32> = sb.scatter(&per_token).iter().map(|&w| w as f32).collect();
        model.lm_loss(be, &mut acts, &sb.targets, &weights, 1.0, Some(&mut grads))?;
        model.backward(be, &mut acts, &mut grads);
        let lr = lr_schedule(step, cfg.lr, cfg.lr * 0.1, (steps / 10).max(1), steps);
        let norm = opt.update(be, &mut model.params, &grads, lr);
        run.check_update(be, step + 1, norm, &model, "policy's", lr)?;
        last_loss = loss;
        let mut rec = json!({"step": opt.step, "lr": lr, "grad_norm": norm});
        train.fields("", &mut rec);
        if opt.step.is_multiple_of(cfg.eval_every) || opt.step == steps {
            eval = evaluate(be, &model, &data.eval, &ref_eval, kind, ct.pad)?;
            eval.fields("eval_", &mut rec);
        }
        run.log(&rec)?;
        run.tick(format!("loss {loss:.3} held-out accuracy {:.2}", eval.accuracy));
        if Run::save_due(opt.step, cfg.save_every, end) {
            run.commit_policy(be, &model, &opt, serde_json::to_value(record(last_loss))?, Some(&tok_file))?;
        }
    }
    let complete = opt.step == steps;
    let checkpoint = run.finish()?;
    plot(&cfg.out)?;
    if !complete {
        eprintln!("dpo: paused at step {} of {steps}; continue with --resume", opt.step);
    }
    Ok(DpoSummary {
        steps: opt.step,
        train_prompts: data.train.len(),
        eval_prompts: data.eval.len(),
        eval_pairs: data.eval_pairs(),
        skipped_lines: data.skipped_lines,
        all_tied_prompts: data.all_tied_prompts,
        eval,
        final_train_loss: last_loss,
        checkpoint,
        complete,
    })
}

/// `loss.svg`: loss, preference accuracy and log-ratios over the steps.
fn plot(out: &std::path::Path) -> Result<()> {
    let recs = metrics::read(&out.join("metrics.jsonl"))?;
    let s = |k: &str| metrics::series(&recs, "step", k);
    let loss = Panel::new("preference loss").line("train", s("loss")).dotted_line("held out", s("eval_loss"));
    let acc =
        Panel::new("preference accuracy").line("train", s("accuracy")).dotted_line("held out", s("eval_accuracy"));
    let ratios = Panel::new("log pi/ref (nats/answer)")
        .line("chosen", s("chosen_logratio"))
        .line("rejected", s("rejected_logratio"));
    Figure::new("DPO", "step").whole_x().panel(loss).panel(acc).panel(ratios).write(&out.join("loss.svg"))
}
