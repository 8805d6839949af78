//! AdamW over a whole parameter list, with global gradient-norm clipping (math in `crate::ops::adamw`).

use super::{Config, Tensors};
use crate::backend::Backend;
use crate::ops::adamw::AdamWParams;
use anyhow::Result;

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value (0 = no clipping).
    pub grad_clip: f64,
}

impl Default for AdamWConfig {
    /// GPT-2 / llm.c defaults: betas (0.9, 0.95), eps 1e-8, weight decay 0.1, clip 1.0.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 }
    }
}

pub struct AdamW<B: Backend> {
    pub hp: AdamWConfig,
    pub m: Tensors<B>,
    pub v: Tensors<B>,
    /// Steps taken so far (the next update is step + 1).
    pub step: u64,
    decay: Vec<bool>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(be: &B, cfg: &Config, hp: AdamWConfig) -> Result<Self> {
        Ok(AdamW {
            hp,
            m: Tensors::zeros_full(be, cfg)?,
            v: Tensors::zeros_full(be, cfg)?,
            step: 0,
            decay: cfg.param_specs().iter().map(|s| s.decay).collect(),
        })
    }

    /// The global L2 norm of the gradients.
    pub fn grad_norm(be: &B, grads: &Tensors<B>) -> f64 {
        be.sum_squares_all(&grads.bufs).sqrt()
    }

    /// One update at learning rate `lr`; returns the gradient norm before clipping.
    pub fn update(&mut self, be: &B, params: &mut Tensors<B>, grads: &Tensors<B>, lr: f64) -> f64 {
        let norm = Self::grad_norm(be, grads);
        let grad_scale =
            if self.hp.grad_clip > 0.0 && norm > self.hp.grad_clip { self.hp.grad_clip / norm } else { 1.0 };
        self.step += 1;
        let hs: Vec<AdamWParams> = (0..params.bufs.len())
            .map(|i| AdamWParams {
                lr,
                beta1: self.hp.beta1,
                beta2: self.hp.beta2,
                eps: self.hp.eps,
                weight_decay: if self.decay[i] { self.hp.weight_decay } else { 0.0 },
                step: self.step,
                grad_scale,
            })
            .collect();
        be.adamw_all(&mut params.bufs, &grads.bufs, &mut self.m.bufs, &mut self.v.bufs, &hs);
        norm
    }
}
