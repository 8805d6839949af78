//! Step 2: the reward model — the decoder with a scalar head read at the answer's last token.
//!
//! For a prompt x with K answers ranked by a labeller, the loss is the InstructGPT pairwise loss
//!   loss(x) = 1/P * sum over the P = C(K,2) - ties pairs (w better than l) of -log sigmoid(r(x,y_w) - r(x,y_l))
//! computed from ONE forward pass per answer: the K answers of a prompt are rows of one batch, the score of
//! each is read at its `<|end|>` token, every pair's gradient is accumulated onto its two rows
//! (d/dr_w = -sigmoid(r_l - r_w) / P, d/dr_l = +sigmoid(r_l - r_w) / P), then the head and the decoder
//! backpropagate once. A batch holds several prompts; its loss is their mean. One epoch by default (more
//! overfits, InstructGPT). After training the head's bias is shifted so that the SFT demonstrations score
//! 0 on average (reward normalisation). Head init: N(0, 1/sqrt(C+1)), bias 0.
//!
//! Every `save_every` steps (and when pausing at `stop_after`) a checkpoint holds the reward model, the
//! trunk's AdamW moments followed by the head's (named `score.weight` / `score.bias`), the step and the
//! run's settings. The prompt order of a step is a pure function of (seed, step), so `--resume` (same data,
//! seed and hyper-parameters; anything else is refused) is bit-identical to a run that never stopped. The
//! final checkpoint (after the bias shift) closes the run.

use crate::backend::Backend;
use crate::checkpoint;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::data::batch::{epoch_order, slices, PaddedBatch, Pair};
use crate::data::chat::{self, ChatFormat};
use crate::data::jsonl;
use crate::data::preference::{Group, Preferences};
use crate::model::scalar::{head_step, HeadOpt, ScalarModel};
use crate::model::{Acts, AdamW, AdamWConfig, ScalarHead, Tensors};
use crate::ops::adamw::lr_schedule;
use crate::pipeline::metrics;
use crate::pipeline::run::{
    check, finite_head, finite_weights, flag_of, non_finite_weights, refuse_changes, setting_differences, Fingerprint,
    Run,
};
use crate::tokenizer::TokenizerFile;
use crate::util::plot::{Figure, Panel};
use crate::util::stats::{sigmoid, softplus};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

pub type RewardModel<B> = ScalarModel<B>;

/// Mean over `pairs` (better, worse) of -log sigmoid(r_better - r_worse), and its gradient wrt `r`.
pub fn pairwise_loss(r: &[f64], pairs: &[(usize, usize)]) -> (f64, Vec<f64>) {
    let mut dr = vec![0.0; r.len()];
    if pairs.is_empty() {
        return (0.0, dr);
    }
    let p = pairs.len() as f64;
    let mut loss = 0.0;
    for &(w, l) in pairs {
        let m = r[w] - r[l];
        // -log sigmoid(m) = softplus(-m); its derivative is -sigmoid(-m).
        loss += softplus(-m);
        let s = sigmoid(-m);
        dr[w] -= s / p;
        dr[l] += s / p;
    }
    (loss / p, dr)
}

/// Everything that defines a reward-model run (saved with each checkpoint; `--resume` checks it). Its
/// fields are also the `rlhf reward` flags, each default written once, here.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct RewardConfig {
    /// Start from a policy (usually the SFT model: a fresh scalar head is added) or a reward model (continue).
    #[arg(long)]
    pub base: PathBuf,
    /// Comparisons, JSONL: {"prompt", "chosen", "rejected"} or {"prompt", "completions": [K], "ranking": [K]}
    /// with ranking[i] the rank of completion i (0 = best; equal ranks are ties, dropped).
    #[arg(long)]
    pub data: PathBuf,
    // --tokenizer / --force-tokenizer: by default the base model's (on a resume, the run's).
    #[command(flatten)]
    #[serde(flatten)]
    pub tokenizer: TokenizerArgs,
    /// SFT demonstrations ({"prompt", "completion"}): after training the bias is set so they score 0 on average.
    #[arg(long)]
    pub sft_data: Option<PathBuf>,
    /// Run directory: metrics.jsonl, loss.svg and step-numbered checkpoints.
    #[arg(long, default_value = "runs/reward")]
    pub out: PathBuf,
    /// Prompts per step (all K answers of each prompt in one batch).
    #[arg(long, default_value_t = 8)]
    pub prompts_per_step: usize,
    /// Passes over the comparisons (1 is the published choice: more overfits).
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    /// Peak learning rate (warmup over the first tenth of the steps, cosine decay to a tenth of it).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Fraction of prompts held out for the pairwise accuracy, in (0, 1); a prompt is held out by a hash of
    /// its text, so it is on the same side in every file and every round of the iterated loop.
    #[arg(long, default_value_t = 0.15)]
    pub eval_fraction: f64,
    /// Skip (and count) malformed JSONL lines instead of stopping at the first one.
    #[arg(long)]
    pub skip_bad: bool,
    /// Seed of the held-out split, the head's initialisation and the prompt order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Save a checkpoint (model, both optimizers' moments, step) every N steps; the last step always.
    #[serde(default = "default_save_every")]
    #[arg(long, default_value_t = default_save_every())]
    pub save_every: u64,
    /// Pause after this step (a checkpoint is written); continue later with --resume.
    #[serde(default)]
    #[arg(long)]
    pub stop_after: Option<u64>,
}

fn default_save_every() -> u64 {
    50
}

impl RewardConfig {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        check::at_least("--prompts-per-step", self.prompts_per_step as u64, 1)?;
        check::positive("--epochs", self.epochs)?;
        check::positive("--lr", self.lr)?;
        check::unit_open("--eval-fraction", self.eval_fraction)?;
        check::at_least("--save-every", self.save_every, 1)?;
        if let Some(s) = self.stop_after {
            check::at_least("--stop-after", s, 1)?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct RewardSummary {
    pub steps: u64,
    /// What was left out of the data, each counted: malformed ranked lines (with `skip_bad`), prompts
    /// whose answers all tie (no pair to learn from), malformed SFT demonstration lines (with `skip_bad`).
    pub skipped_lines: usize,
    pub all_tied_prompts: usize,
    pub skipped_demo_lines: usize,
    pub train_prompts: usize,
    pub eval_prompts: usize,
    pub eval_pairs: usize,
    pub eval_accuracy_before: f64,
    pub eval_accuracy: f64,
    pub final_train_loss: f64,
    pub bias_shift: f64,
    pub checkpoint: PathBuf,
    /// False when the run paused at `stop_after` (no evaluation or bias shift yet; `--resume` continues).
    pub complete: bool,
}

/// Scores of right-padded (prompt, answer) rows, read at each answer's last token.
pub fn score_pairs<B: Backend>(
    be: &B,
    rm: &RewardModel<B>,
    acts: &mut Acts<B>,
    pairs: &[&Pair],
    pad: u32,
) -> Result<Vec<f64>> {
    let sb = PaddedBatch::new(&slices(pairs.iter().copied()), acts.b, acts.t, pad)?;
    rm.scores(be, acts, &sb)
}

/// Scores of many pairs, in batches of the activations' size; a non-finite score is an error.
pub fn score_all<B: Backend>(be: &B, rm: &RewardModel<B>, pairs: &[Pair], pad: u32, batch: usize) -> Result<Vec<f64>> {
    let t = pairs.iter().map(|(p, a)| p.len() + a.len()).max().unwrap_or(1);
    let mut acts = Acts::new(be, &rm.trunk.cfg, batch, t)?;
    let mut out = vec![];
    for chunk in pairs.chunks(batch) {
        out.extend(score_pairs(be, rm, &mut acts, &chunk.iter().collect::<Vec<_>>(), pad)?);
    }
    if let Some((i, x)) = out.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        bail!("the reward model scored pair {} (in input order, from 1) as {x}: the model is not usable", i + 1);
    }
    Ok(out)
}

/// Fraction of (better, worse) pairs the model orders correctly (a tie counts half).
pub fn accuracy<B: Backend>(
    be: &B,
    rm: &RewardModel<B>,
    groups: &[Group],
    pad: u32,
    batch: usize,
) -> Result<(f64, usize)> {
    let (mut right, mut total) = (0.0, 0usize);
    for g in groups {
        let r = score_all(be, rm, &g.pairs, pad, batch)?;
        for &(w, l) in &g.better_worse {
            right += if r[w] > r[l] {
                1.0
            } else if r[w] == r[l] {
                0.5
            } else {
                0.0
            };
            total += 1;
        }
    }
    Ok((right / total.max(1) as f64, total))
}

/// What a checkpoint's training state records beyond the moments (its `args`).
#[derive(Serialize, Deserialize)]
struct RunRecord {
    config: RewardConfig,
    /// Total steps of the run.
    steps: u64,
    /// Of the encoded comparisons (held-out split first), so changed data or tokenizer is caught.
    data_fingerprint: String,
    /// Exact bits of the held-out accuracy before training and of the last training loss.
    acc_before_bits: u64,
    last_loss_bits: u64,
    /// The final checkpoint (bias shifted): nothing is left to resume.
    complete: bool,
}

/// The settings a resumed run must share with the saved one (all but where it lives and when it saves or
/// pauses), as "name: saved vs given" for each that differs.
fn config_differences(saved: &RewardConfig, given: &RewardConfig) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(saved)?, serde_json::to_value(given)?);
    // The tokenizer is checked by its hash against the run's checkpoint instead.
    let allowed = ["out", "save_every", "stop_after", "tokenizer", "force_tokenizer"];
    Ok(setting_differences(&a, &b, &allowed, &flag_of))
}

/// Commit the model and training state of the current step: the reward model, the trunk's moments
/// followed by the head's, and `rec`.
fn save_state<B: Backend>(
    be: &B,
    run: &mut Run,
    rm: &RewardModel<B>,
    opt: &AdamW<B>,
    head_opt: &HeadOpt<B>,
    rec: &RunRecord,
    tokenizer: &TokenizerFile,
) -> Result<PathBuf> {
    let ck = rm.to_checkpoint(be)?;
    let state = head_opt.trunk_state(be, &rm.trunk.cfg, opt, serde_json::to_value(rec)?, run.metrics_len()?);
    state.validate_for(&ck)?;
    run.commit(opt.step, |dir| {
        checkpoint::save(dir, &ck, Some(tokenizer))?;
        checkpoint::save_train_state(dir, &state)
    })
}

/// Train (or, with `resume`, continue) a reward model.
pub fn train<B: Backend>(be: &B, cfg: &RewardConfig, resume: bool) -> Result<RewardSummary> {
    cfg.validate()?;
    let (lock, start) = Run::start_point(&cfg.out, resume)?;
    let (mut rm, saved) = match start {
        Some(dir) => {
            let (ck, state) = (checkpoint::load(&dir)?, checkpoint::load_train_state(&dir)?);
            let rec: RunRecord = serde_json::from_value(state.args.clone())
                .with_context(|| format!("{}: not a reward-model run's training state", dir.display()))?;
            if rec.complete {
                bail!(
                    "--resume: the reward model in {} is complete ({} steps); nothing to resume",
                    cfg.out.display(),
                    rec.steps
                );
            }
            refuse_changes(&cfg.out, &config_differences(&rec.config, cfg)?)?;
            (RewardModel::from_checkpoint(be, &ck, &dir.display().to_string())?, Some((ck, state, rec)))
        }
        None => {
            let base = crate::checkpoint::run_dir::resolve_checkpoint(&cfg.base)?;
            let ck = checkpoint::load(&base)?;
            // A policy starts a new reward model (fresh head); a reward model continues (warm start).
            let rm = match ck.kind {
                checkpoint::ModelKind::Reward => {
                    RewardModel::from_checkpoint(be, &ck, &cfg.base.display().to_string())?
                }
                checkpoint::ModelKind::Policy => {
                    ScalarModel { trunk: ck.to_model(be)?, head: ScalarHead::init(be, ck.config.n_embd, cfg.seed)? }
                }
                other => bail!(
                    "--base {} is a {} model; a reward model starts from a policy (SFT) or a reward checkpoint",
                    cfg.base.display(),
                    other.as_str()
                ),
            };
            (rm, None)
        }
    };
    let mcfg = rm.trunk.cfg;
    let source = match &saved {
        None => Source::Model("--base", &cfg.base),
        Some(_) => Source::Model("--out (the run resumed)", &cfg.out),
    };
    let tok_file = ck_tok::resolve(&cfg.tokenizer, &[source])?;
    let tok = tok_file.tokenizer();
    crate::tokenizer::check_vocab(tok.vocab_size(), mcfg.vocab_size, &tok_file.source().display().to_string())?;
    let ct = ChatFormat::from_tokenizer(tok)?;
    let data = Preferences::load(&cfg.data, cfg.skip_bad, tok, &ct, mcfg.n_positions, cfg.eval_fraction, cfg.seed)?;
    let (t, k_max) = data.widths();
    let (train_groups, eval_groups) = (&data.train, &data.eval);
    let rows = cfg.prompts_per_step * k_max;
    let eval_batch = 16;
    let eval_pairs = data.eval_pairs();
    let data_fingerprint = Fingerprint::groups(eval_groups.iter().chain(train_groups));
    let steps = ((cfg.epochs * train_groups.len() as f64) / cfg.prompts_per_step as f64).ceil().max(1.0) as u64;

    let hp = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    let mut opt = AdamW::new(be, &mcfg, hp)?;
    let mut head_opt = HeadOpt::zeros(be, mcfg.n_embd)?;
    let (acc_before, mut last_loss, log_len) = match &saved {
        Some((ck, state, rec)) => {
            if rec.data_fingerprint != data_fingerprint || rec.steps != steps {
                bail!(
                    "--resume: the comparisons in {} (with {}) no longer encode as when the run started; resume with the run's own data and tokenizer, or choose another --out",
                    cfg.data.display(),
                    tok_file.source().display()
                );
            }
            head_opt = HeadOpt::restore_trunk_state(be, ck, state, &mut opt)?;
            (f64::from_bits(rec.acc_before_bits), f64::from_bits(rec.last_loss_bits), Some(state.metrics_len))
        }
        None => (accuracy(be, &rm, eval_groups, ct.pad, eval_batch)?.0, f64::NAN, Some(0)),
    };
    let record = |last_loss: f64, complete: bool| RunRecord {
        config: cfg.clone(),
        steps,
        data_fingerprint: data_fingerprint.clone(),
        acc_before_bits: acc_before.to_bits(),
        last_loss_bits: last_loss.to_bits(),
        complete,
    };
    let mut grads = Tensors::zeros(be, &mcfg)?;
    let mut acts = Acts::new(be, &mcfg, rows, t)?;
    let save_every = cfg.save_every;
    let end = cfg.stop_after.map_or(steps, |s| s.min(steps));
    let mut run = Run::open(lock, &cfg.out, "reward", log_len, end.saturating_sub(opt.step), false)?;
    while opt.step < end {
        let step = opt.step;
        // Prompts in the seeded epoch order.
        let batch_groups: Vec<&Group> = epoch_order(cfg.seed, step, cfg.prompts_per_step, train_groups.len())
            .into_iter()
            .map(|i| &train_groups[i])
            .collect();
        let batch = PaddedBatch::new(&slices(batch_groups.iter().flat_map(|g| g.pairs.iter())), rows, t, ct.pad)?;
        grads.fill_zero(be);
        let mut hg = rm.head.zero_grads(be)?;
        rm.trunk.forward(be, &mut acts, &batch.tokens, None, None)?;
        let all = rm.head.forward(be, &acts.lnf, mcfg.n_embd)?;
        // Per prompt: its rows' scores, the pairwise loss, and the gradient placed on its rows' last tokens.
        let mut dr_full = vec![0.0; rows * t];
        let (mut loss, mut row, mut right, mut n_pairs) = (0.0, 0usize, 0usize, 0usize);
        for g in &batch_groups {
            let last: Vec<usize> = (0..g.pairs.len()).map(|i| batch.last_row(row + i)).collect();
            let r: Vec<f64> = last.iter().map(|&i| all[i]).collect();
            let (l, dr) = pairwise_loss(&r, &g.better_worse);
            loss += l / batch_groups.len() as f64;
            for (i, d) in last.iter().zip(dr) {
                dr_full[*i] = d / batch_groups.len() as f64;
            }
            right += g.better_worse.iter().filter(|&&(w, l)| r[w] > r[l]).count();
            n_pairs += g.better_worse.len();
            row += g.pairs.len();
        }
        if !loss.is_finite() {
            return Err(run.stopped(
                "step",
                step + 1,
                format!("the loss became {loss} (lower --lr or check the data)"),
            ));
        }
        be.fill_zero(&mut acts.dlnf);
        rm.head.backward(be, &mut hg, &mut acts.dlnf, &acts.lnf, &dr_full, mcfg.n_embd)?;
        rm.trunk.backward(be, &mut acts, &mut grads);
        let lr = lr_schedule(step, cfg.lr, cfg.lr * 0.1, (steps / 10).max(1), steps);
        let norm = opt.update(be, &mut rm.trunk.params, &grads, lr);
        head_step(be, &mut rm, &mut head_opt, &hg, lr, &hp, opt.step);
        if let Err(sq) = finite_weights(be, &rm.trunk.params.bufs).and_then(|_| finite_head(be, &rm.head)) {
            return Err(run.stopped("step", step + 1, non_finite_weights("reward model's", lr, sq, "--lr")));
        }
        last_loss = loss;
        run.log(&json!({"step": opt.step, "loss": loss, "train_pair_accuracy": right as f64 / n_pairs.max(1) as f64, "lr": lr, "grad_norm": norm}))?;
        run.tick(format!("loss {loss:.3}"));
        // The last step is saved after the evaluation and bias shift, below.
        if opt.step < steps && Run::save_due(opt.step, save_every, end) {
            save_state(be, &mut run, &rm, &opt, &head_opt, &record(last_loss, false), &tok_file)?;
        }
    }
    if opt.step < steps {
        let checkpoint = run.finish()?;
        eprintln!("reward: paused at step {} of {steps}; continue with --resume", opt.step);
        return Ok(RewardSummary {
            steps: opt.step,
            skipped_lines: data.skipped_lines,
            all_tied_prompts: data.all_tied_prompts,
            skipped_demo_lines: 0,
            train_prompts: train_groups.len(),
            eval_prompts: eval_groups.len(),
            eval_pairs,
            eval_accuracy_before: acc_before,
            eval_accuracy: f64::NAN,
            final_train_loss: last_loss,
            bias_shift: 0.0,
            checkpoint,
            complete: false,
        });
    }
    let (acc, _) = accuracy(be, &rm, eval_groups, ct.pad, eval_batch)?;
    run.log(&json!({"step": steps, "eval_pair_accuracy": acc, "eval_pair_accuracy_before": acc_before}))?;
    // Reward normalisation: the SFT demonstrations score 0 on average.
    let mut skipped_demo_lines = 0;
    let bias_shift = match &cfg.sft_data {
        Some(path) => {
            let demos = jsonl::read_sft(path, cfg.skip_bad)?;
            skipped_demo_lines = demos.skipped;
            let (pairs, _) = chat::encode_examples(tok, &ct, &demos.records, mcfg.n_positions)?;
            let scores = score_all(be, &rm, &pairs, ct.pad, eval_batch)?;
            let mean = scores.iter().sum::<f64>() / scores.len() as f64;
            let (w, b) = rm.head.to_host(be);
            rm.head = ScalarHead::from_host(be, &w, b - mean as f32)?;
            -mean
        }
        None => 0.0,
    };
    save_state(be, &mut run, &rm, &opt, &head_opt, &record(last_loss, true), &tok_file)?;
    let dir = run.finish()?;
    let recs = metrics::read(&cfg.out.join("metrics.jsonl"))?;
    let loss = Panel::new("-log sigmoid(r_w - r_l)").line("train", metrics::series(&recs, "step", "loss"));
    Figure::new("reward model: pairwise loss", "step").whole_x().panel(loss).write(&cfg.out.join("loss.svg"))?;
    Ok(RewardSummary {
        steps,
        skipped_lines: data.skipped_lines,
        all_tied_prompts: data.all_tied_prompts,
        skipped_demo_lines,
        train_prompts: train_groups.len(),
        eval_prompts: eval_groups.len(),
        eval_pairs,
        eval_accuracy_before: acc_before,
        eval_accuracy: acc,
        final_train_loss: last_loss,
        bias_shift,
        checkpoint: dir,
        complete: true,
    })
}

/// Load a reward model (our checkpoint or a run directory), refusing a policy.
pub fn load<B: Backend>(be: &B, path: &Path) -> Result<RewardModel<B>> {
    let dir = crate::checkpoint::run_dir::resolve_checkpoint(path)?;
    let ck = checkpoint::load(&dir)?;
    RewardModel::from_checkpoint(be, &ck, &path.display().to_string())
}
