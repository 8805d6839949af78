//! Step 0: pretraining a decoder on token shards, through the language-model loop of [`super::run`].

use super::run::{fit, resume_point, BatchSource, FitSummary, LoopConfig};
use crate::backend::Backend;
use crate::data::batch::LmBatch;
use crate::data::shards::Batch;
use crate::data::shards::Dataset;
use crate::model::{AdamW, Config, Gpt2};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that defines a pretraining run beyond the loop's own settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub data: PathBuf,
    pub model: Config,
    pub batch: usize,
    pub seq: usize,
    pub eval_batches: usize,
    pub run: LoopConfig,
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

/// Run (or, with `resume`, continue) pretraining. `init` optionally starts from an existing model.
pub fn pretrain<B: Backend>(
    be: &B,
    mut cfg: PretrainConfig,
    init: Option<&Path>,
    resume: bool,
) -> Result<PretrainSummary> {
    let start = resume_point(&cfg.run.out, resume)?;
    let mut log_len = None;
    let mut opt_state = None;
    let mut model = match start {
        Some((ck, state)) => {
            let saved: PretrainConfig =
                serde_json::from_value(state.args.clone()).context("reading the run's saved configuration")?;
            // The run's own settings win, except how far to go and where to pause.
            let run = LoopConfig {
                steps: cfg.run.steps.max(saved.run.steps),
                stop_after: cfg.run.stop_after,
                ..saved.run.clone()
            };
            cfg = PretrainConfig { run, ..saved };
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
            None => Gpt2::init(be, cfg.model, cfg.run.seed)?,
        },
    };
    let mcfg = model.cfg;
    if cfg.seq > mcfg.n_positions {
        bail!("--seq {} exceeds the model's context n_positions = {}", cfg.seq, mcfg.n_positions);
    }
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
    let record = serde_json::to_value(&cfg)?;
    let fit = fit(
        be,
        "pretrain",
        &cfg.run,
        &mut model,
        &mut opt,
        &src,
        &record,
        log_len,
        Some(("unigram baseline", unigram)),
    )?;
    Ok(PretrainSummary { fit, unigram_entropy: unigram })
}
