//! Moving models and optimizer state between a backend and checkpoint files (`crate::checkpoint`).

use super::{AdamW, Config, Gpt2, Tensors};
use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, ModelKind, NamedTensor, TrainState};
use crate::ops::Float;
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;

impl Checkpoint {
    /// A policy-kind checkpoint of `model` (host f32 copies of every parameter).
    pub fn from_model<B: Backend>(be: &B, model: &Gpt2<B>, kind: ModelKind) -> Checkpoint {
        let tensors = model.to_host(be).into_iter().map(|(s, data)| NamedTensor::new(s.name, s.shape, data)).collect();
        Checkpoint { config: model.cfg, kind, tensors, extra: vec![] }
    }

    /// The decoder of this checkpoint on `be`.
    pub fn to_model<B: Backend>(&self, be: &B) -> Result<Gpt2<B>> {
        let host: Vec<Vec<f32>> = self.tensors.iter().map(|t| t.data.clone()).collect();
        Gpt2::from_host(be, self.config, &host)
    }
}

/// Load a language model (our checkpoint, a run directory, a Hugging Face GPT-2 folder or an llm.c file),
/// refusing a reward model.
pub fn load_policy<B: Backend>(be: &B, path: &Path) -> Result<Gpt2<B>> {
    let dir = crate::run_dir::resolve_checkpoint(path)?;
    let ck = checkpoint::load(&dir)?;
    ck.expect_kind(ModelKind::Policy, &path.display().to_string())?;
    ck.to_model(be)
}

/// Tensors (parameters, gradients or moments) as named host f32 tensors in canonical order.
pub(crate) fn named<B: Backend>(be: &B, cfg: &Config, t: &Tensors<B>) -> Vec<NamedTensor> {
    super::gpt2::tensors_to_host(be, cfg, t).into_iter().map(|(s, d)| NamedTensor::new(s.name, s.shape, d)).collect()
}

/// Upload named host tensors into `dst`, checking each name and shape against `cfg`'s parameter list.
pub(crate) fn upload<B: Backend>(be: &B, cfg: &Config, src: &[NamedTensor], dst: &mut Tensors<B>) -> Result<()> {
    let specs = cfg.param_specs();
    if src.len() != specs.len() {
        bail!("optimizer state holds {} tensors, the model {}", src.len(), specs.len());
    }
    for ((spec, t), buf) in specs.iter().zip(src).zip(dst.bufs.iter_mut()) {
        if t.name != spec.name || t.shape != spec.shape {
            bail!(
                "optimizer state tensor '{}' {:?} does not match parameter '{}' {:?}",
                t.name,
                t.shape,
                spec.name,
                spec.shape
            );
        }
        let mut v: Vec<B::F> = t.data.iter().map(|&x| B::F::of(x as f64)).collect();
        v.resize(be.len(buf), <B::F as num_traits::Zero>::zero());
        *buf = be.upload(&v)?;
    }
    Ok(())
}

impl TrainState {
    /// Capture AdamW's moments and step with the run's own record (`args`) and metrics position.
    pub fn from_optimizer<B: Backend>(
        be: &B,
        cfg: &Config,
        opt: &AdamW<B>,
        args: Value,
        metrics_len: u64,
    ) -> TrainState {
        TrainState {
            step: opt.step,
            rng: Value::Null,
            data_position: opt.step,
            metrics_len,
            args,
            m: named(be, cfg, &opt.m),
            v: named(be, cfg, &opt.v),
        }
    }

    /// Put the saved moments and step back into `opt`.
    pub fn restore_optimizer<B: Backend>(&self, be: &B, cfg: &Config, opt: &mut AdamW<B>) -> Result<()> {
        upload(be, cfg, &self.m, &mut opt.m)?;
        upload(be, cfg, &self.v, &mut opt.v)?;
        opt.step = self.step;
        Ok(())
    }
}
