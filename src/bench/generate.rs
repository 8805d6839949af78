//! Generation throughput: batched sampling with the KV cache through [`generate_with`], the code every
//! pipeline step samples with.
//!
//! Each row gets a random prompt of `prompt_len` tokens and `new_tokens` are sampled from the whole
//! distribution at temperature 1 with no stop token, so every row produces exactly `new_tokens`.
//! Reported: new tokens per second over the whole call (prefill included, as `transformers`' `generate`
//! is timed by `tools/bench_generate_torch.py`) and the milliseconds per decode step (one token for every
//! row), measured from the first chosen token to the last.

use crate::backend::Backend;
use crate::model::sample::{generate_with, SampleConfig};
use crate::model::{Config, Decoder};
use crate::util::rng::Rng;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct GenBench {
    pub device: String,
    pub batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    /// Prefill and first pick [ms].
    pub prefill_ms: f64,
    /// Mean time of one decode step over the batch [ms].
    pub step_ms: f64,
    pub total_ms: f64,
    /// batch x new_tokens / total time.
    pub tokens_per_s: f64,
}

/// Time one `generate` call per batch size on a randomly initialised model of shape `cfg`.
pub fn generation<B: Backend>(
    be: &B,
    cfg: Config,
    batches: &[usize],
    prompt_len: usize,
    new_tokens: usize,
) -> Result<Vec<GenBench>> {
    let model = Decoder::init(be, cfg, 0)?;
    let sc = SampleConfig { max_new_tokens: new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, stop: None };
    let mut rng = Rng::new(1);
    batches
        .iter()
        .map(|&b| {
            let prompts: Vec<Vec<u32>> =
                (0..b).map(|_| (0..prompt_len).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect()).collect();
            let t0 = Instant::now();
            let mut first: Option<Instant> = None;
            let gens = generate_with(be, &model, &prompts, &sc, &mut [Rng::new(2)], |_, _| {
                first.get_or_insert_with(Instant::now);
                Ok(())
            })?;
            let total = t0.elapsed().as_secs_f64();
            let prefill = first.map_or(total, |f| (f - t0).as_secs_f64());
            let produced: usize = gens.iter().map(|g| g.tokens.len()).sum();
            Ok(GenBench {
                device: be.name(),
                batch: b,
                prompt_len,
                new_tokens,
                prefill_ms: prefill * 1e3,
                step_ms: (total - prefill) / (new_tokens.max(2) - 1) as f64 * 1e3,
                total_ms: total * 1e3,
                tokens_per_s: produced as f64 / total,
            })
        })
        .collect()
}
