//! Moving models and optimizer state between a backend and checkpoint files (`crate::checkpoint`).

use crate::backend::Backend;
use crate::checkpoint::{self, Checkpoint, ModelKind, NamedTensor, TrainState};
use crate::model::scalar::{HeadOpt, ScalarModel};
use crate::model::{AdamW, Config, Decoder, ScalarHead, Tensors};
use crate::ops::Float;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

impl Checkpoint {
    /// A policy-kind checkpoint of `model` (host f32 copies of every parameter).
    pub fn from_model<B: Backend>(be: &B, model: &Decoder<B>, kind: ModelKind) -> Checkpoint {
        let tensors = model.to_host(be).into_iter().map(|(s, data)| NamedTensor::new(s.name, s.shape, data)).collect();
        Checkpoint { config: model.cfg, kind, tensors, extra: vec![] }
    }

    /// The decoder of this checkpoint on `be`.
    pub fn to_model<B: Backend>(&self, be: &B) -> Result<Decoder<B>> {
        let host: Vec<Vec<f32>> = self.tensors.iter().map(|t| t.data.clone()).collect();
        Decoder::from_host(be, self.config, &host)
    }
}

/// Load a language model (our checkpoint, a run directory, a Hugging Face GPT-2 folder or an llm.c file),
/// refusing a reward model.
pub fn load_policy<B: Backend>(be: &B, path: &Path) -> Result<Decoder<B>> {
    let dir = crate::checkpoint::run_dir::resolve_checkpoint(path)?;
    let ck = checkpoint::load(&dir)?;
    ck.expect_kind(ModelKind::Policy, &path.display().to_string())?;
    ck.to_model(be)
}

/// Tensors (parameters, gradients or moments) as named host f32 tensors in canonical order.
pub(crate) fn named<B: Backend>(be: &B, cfg: &Config, t: &Tensors<B>) -> Vec<NamedTensor> {
    crate::model::decoder::tensors_to_host(be, cfg, t)
        .into_iter()
        .map(|(s, d)| NamedTensor::new(s.name, s.shape, d))
        .collect()
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

impl<B: Backend> ScalarModel<B> {
    /// A reward-kind checkpoint of this model (decoder + `score.weight`, `score.bias`).
    pub fn to_checkpoint(&self, be: &B) -> Result<Checkpoint> {
        self.to_checkpoint_as(be, ModelKind::Reward)
    }

    /// A checkpoint of this model as a reward or a value model (`kind`).
    pub fn to_checkpoint_as(&self, be: &B, kind: ModelKind) -> Result<Checkpoint> {
        if !kind.has_head() {
            bail!("a scalar model is saved as a reward or value model, not as a {}", kind.as_str());
        }
        let (w, b) = self.head.to_host(be);
        let c = self.trunk.cfg.n_embd;
        let extra =
            vec![NamedTensor::new("score.weight", vec![1, c], w), NamedTensor::new("score.bias", vec![1], vec![b])];
        let mut ck = Checkpoint::from_model(be, &self.trunk, kind);
        ck.extra = extra;
        ck.validate()?;
        Ok(ck)
    }

    /// Load a reward-kind checkpoint; `what` names it in errors.
    pub fn from_checkpoint(be: &B, ck: &Checkpoint, what: &str) -> Result<Self> {
        Self::from_checkpoint_as(be, ck, ModelKind::Reward, what)
    }

    /// Load a checkpoint of kind `kind` (reward or value); `what` names it in errors.
    pub fn from_checkpoint_as(be: &B, ck: &Checkpoint, kind: ModelKind, what: &str) -> Result<Self> {
        ck.expect_kind(kind, what)?;
        let trunk = ck.to_model(be)?;
        let c = ck.config.n_embd;
        let w = ck
            .get("score.weight")
            .with_context(|| format!("{what}: {} checkpoint has no 'score.weight'", kind.as_str()))?;
        if w.numel() != c {
            bail!("{what}: 'score.weight' has shape {:?}, expected [1, {c}]", w.shape);
        }
        let b = ck.get("score.bias").map_or(0.0, |t| t.data.first().copied().unwrap_or(0.0));
        Ok(ScalarModel { trunk, head: ScalarHead::from_host(be, &w.data, b)? })
    }
}

impl<B: Backend> HeadOpt<B> {
    /// The training state of a trunk and this scalar head (a value or reward model): the trunk's AdamW
    /// moments, then the head's two, named like the head's parameters (`score.weight`, `score.bias`).
    pub fn trunk_state(
        &self,
        be: &B,
        cfg: &crate::model::Config,
        trunk: &AdamW<B>,
        args: Value,
        metrics_len: u64,
    ) -> TrainState {
        let mut s = TrainState::from_optimizer(be, cfg, trunk, args, metrics_len);
        s.m.extend(checkpoint::head_tensors(&host_f32(be, &self.m_w), host_f32(be, &self.m_b)[0]));
        s.v.extend(checkpoint::head_tensors(&host_f32(be, &self.v_w), host_f32(be, &self.v_b)[0]));
        s
    }

    /// The inverse of `trunk_state`, checked by name and shape against the model `ck`: restores `trunk`
    /// and returns the head's moments.
    pub fn restore_trunk_state(be: &B, ck: &Checkpoint, state: &TrainState, trunk: &mut AdamW<B>) -> Result<Self> {
        state.validate_for(ck)?;
        let nt = ck.config.param_specs().len();
        upload(be, &ck.config, &state.m[..nt], &mut trunk.m)?;
        upload(be, &ck.config, &state.v[..nt], &mut trunk.v)?;
        trunk.step = state.step;
        let t = |l: &[NamedTensor], k: usize| upload_f32(be, &l[nt + k].data);
        Ok(HeadOpt { m_w: t(&state.m, 0)?, m_b: t(&state.m, 1)?, v_w: t(&state.v, 0)?, v_b: t(&state.v, 1)? })
    }
}

fn host_f32<B: Backend>(be: &B, b: &B::Buf) -> Vec<f32> {
    be.download(b).iter().map(|x| x.f64() as f32).collect()
}

fn upload_f32<B: Backend>(be: &B, x: &[f32]) -> Result<B::Buf> {
    be.upload(&x.iter().map(|&v| B::F::of(v as f64)).collect::<Vec<_>>())
}
