//! `rlhf bench`: time one full training step (forward, backward, AdamW) of a preset.
//!
//! FLOPs per step = tokens x (6 N + 6 L C T) (llm.c's count: matmuls forward and backward, plus the
//! attention score and value products), so GFLOP/s compares with other implementations directly.

use crate::backend::Backend;
use crate::model::{Acts, AdamW, AdamWConfig, Config, Decoder, Tensors};
use crate::util::rng::Rng;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct StepBench {
    pub device: String,
    pub preset: String,
    pub batch: usize,
    pub seq: usize,
    pub params: usize,
    pub steps: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub tokens_per_s: f64,
    pub gflops_per_s: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    /// Parameters, gradients and the two AdamW moments (4 tensors of N values of the backend's type).
    pub state_mib: f64,
    /// Activations and gradient scratch of one [batch, seq] step (`Acts::numel`).
    pub acts_mib: f64,
    /// The process's peak resident set after the steps (getrusage; 0 where unavailable).
    pub peak_rss_mib: f64,
}

/// The process's peak resident memory in MiB (Linux reports ru_maxrss in KiB).
fn peak_rss_mib() -> f64 {
    // SAFETY: getrusage writes one rusage struct into the zeroed value it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    match unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } {
        0 => u.ru_maxrss as f64 / 1024.0,
        _ => 0.0,
    }
}

const MIB: f64 = (1 << 20) as f64;

/// Run `warmup + steps` training steps on random tokens and report the median step time; `measuring` is
/// called once, when the warmup is over (the first steps of a fresh model do one-time work: on a GPU the
/// weights' bf16 copies, cuBLASLt's algorithm search).
#[allow(clippy::too_many_arguments)]
pub fn train_step<B: Backend>(
    be: &B,
    preset: &str,
    cfg: Config,
    batch: usize,
    seq: usize,
    warmup: usize,
    steps: usize,
    measuring: &mut dyn FnMut(),
) -> Result<StepBench> {
    let model_seed = 0;
    let mut model = Decoder::init(be, cfg, model_seed)?;
    let mut grads = Tensors::zeros(be, &cfg)?;
    let mut opt = AdamW::new(be, &cfg, AdamWConfig::default())?;
    let mut acts = Acts::new(be, &cfg, batch, seq)?;
    let mut rng = Rng::new(1);
    let n = batch * seq;
    let tokens: Vec<u32> = (0..n).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let weights = vec![1.0 / n as f32; n];
    let mut times = Vec::new();
    let mut losses = Vec::new();
    for i in 0..warmup + steps {
        if i == warmup {
            measuring();
        }
        let t0 = Instant::now();
        grads.fill_zero(be);
        model.forward(be, &mut acts, &tokens, None, None)?;
        let loss = model.lm_loss(be, &mut acts, &targets, &weights, 1.0, Some(&mut grads))?;
        model.backward(be, &mut acts, &mut grads);
        opt.update(be, &mut model.params, &grads, 1e-4);
        let dt = t0.elapsed().as_secs_f64();
        losses.push(loss);
        if i >= warmup {
            times.push(dt);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let flops = n as f64 * cfg.train_flops_per_token(seq);
    Ok(StepBench {
        device: be.name(),
        preset: preset.into(),
        batch,
        seq,
        params: cfg.num_params(),
        steps,
        median_ms: median * 1e3,
        min_ms: times[0] * 1e3,
        tokens_per_s: n as f64 / median,
        gflops_per_s: flops / median / 1e9,
        loss_first: losses[0],
        loss_last: *losses.last().unwrap(),
        state_mib: (4 * cfg.num_params() * std::mem::size_of::<B::F>()) as f64 / MIB,
        acts_mib: (acts.numel(be) * std::mem::size_of::<B::F>()) as f64 / MIB,
        peak_rss_mib: peak_rss_mib(),
    })
}
