//! The scalar model: a decoder (the trunk) with a scalar head on its final hidden states. It is the reward
//! model (its score read at each answer's last token) and PPO's value model (read before every answer
//! token). The trunk trains with [`AdamW`]; the head has its own moments ([`HeadOpt`]) and its own
//! gradient-norm clip ([`head_step`], no weight decay).

use super::{Acts, AdamWConfig, Config, Decoder, HeadGrads, ScalarHead};
use crate::backend::Backend;
use crate::data::batch::PaddedBatch;
use crate::ops::adamw::AdamWParams;
use anyhow::Result;

/// A decoder with a scalar head: the reward model (read at each answer's last token) and PPO's value model
/// (read before every answer token).
pub struct ScalarModel<B: Backend> {
    pub trunk: Decoder<B>,
    pub head: ScalarHead<B>,
}

impl<B: Backend> ScalarModel<B> {
    /// The head's output at every row [B*T] after a forward pass over the batch.
    pub fn all_rows(&self, be: &B, acts: &mut Acts<B>, sb: &PaddedBatch) -> Result<Vec<f64>> {
        self.trunk.forward(be, acts, &sb.tokens, None, None)?;
        self.head.forward(be, &acts.lnf, self.trunk.cfg.n_embd)
    }

    /// Values before each answer token.
    pub fn values(&self, be: &B, acts: &mut Acts<B>, sb: &PaddedBatch) -> Result<Vec<Vec<f64>>> {
        Ok(sb.gather(&self.all_rows(be, acts, sb)?))
    }

    /// The score of each pair, read at its answer's last token.
    pub fn scores(&self, be: &B, acts: &mut Acts<B>, sb: &PaddedBatch) -> Result<Vec<f64>> {
        let all = self.all_rows(be, acts, sb)?;
        Ok((0..sb.prompt_len.len()).map(|i| all[sb.last_row(i)]).collect())
    }

    pub fn cfg(&self) -> Config {
        self.trunk.cfg
    }
}

/// AdamW moments of a scalar head (the trunk's live in an `AdamW`); used by the value and reward models.
pub struct HeadOpt<B: Backend> {
    pub m_w: B::Buf,
    pub v_w: B::Buf,
    pub m_b: B::Buf,
    pub v_b: B::Buf,
}

impl<B: Backend> HeadOpt<B> {
    /// Zeroed, in full precision (the update keeps moments in f32).
    pub fn zeros(be: &B, c: usize) -> Result<Self> {
        let z = |n| be.zeros_full(n);
        Ok(HeadOpt { m_w: z(c)?, v_w: z(c)?, m_b: z(1)?, v_b: z(1)? })
    }
}

/// One AdamW step of a scalar head, its gradient norm clipped on its own (no weight decay on a head).
pub fn head_step<B: Backend>(
    be: &B,
    v: &mut ScalarModel<B>,
    o: &mut HeadOpt<B>,
    g: &HeadGrads<B>,
    lr: f64,
    hp: &AdamWConfig,
    step: u64,
) {
    let norm = (be.sum_squares(&g.w) + be.sum_squares(&g.b)).sqrt();
    let grad_scale = if hp.grad_clip > 0.0 && norm > hp.grad_clip { hp.grad_clip / norm } else { 1.0 };
    let h = AdamWParams { lr, beta1: hp.beta1, beta2: hp.beta2, eps: hp.eps, weight_decay: 0.0, step, grad_scale };
    be.adamw(&mut v.head.w, &g.w, &mut o.m_w, &mut o.v_w, &h);
    be.adamw(&mut v.head.b, &g.b, &mut o.m_b, &mut o.v_b, &h);
}

/// An exact copy of a model (through host f32, which is exact for an f32 backend).
pub fn clone_model<B: Backend>(be: &B, model: &Decoder<B>) -> Result<Decoder<B>> {
    let host: Vec<Vec<f32>> = model.to_host(be).into_iter().map(|(_, d)| d).collect();
    Decoder::from_host(be, model.cfg, &host)
}

pub fn clone_trunk_head<B: Backend>(be: &B, m: &ScalarModel<B>) -> Result<ScalarModel<B>> {
    let (w, b) = m.head.to_host(be);
    Ok(ScalarModel { trunk: clone_model(be, &m.trunk)?, head: ScalarHead::from_host(be, &w, b)? })
}
