//! Batched autoregressive sampling with a KV cache.
//!
//! Prompts of different lengths are right-padded into one [B, Tp] prefill; causal attention means a row's
//! real tokens never see its padding. Row b's first new token is predicted at position len_b - 1 and
//! written at len_b, overwriting padding in the cache; from then on each step feeds one token per row at
//! its own position, so every new token costs one O(T) attention over the cache, not a re-run of the
//! prefix. The log-probability of each chosen token is taken under the temperature-scaled distribution
//! (before top-k / top-p filtering), which is what PPO's ratio needs.
//!
//! Tokens are chosen where the logits are (`Backend::sample`, the contract of `crate::ops::sample`): only the
//! last position of each live row gets logits, the host draws one uniform number per row from the row's
//! generator and uploads it, and only the ids and log-probs come back. The CPU engine and the kernels make
//! the same choice for the same logits and number, so a rollout on `cuda-sim` follows the CPU engine's token
//! for token with the same seed (unless the two engines' logits, which differ by rounding, put a draw on
//! different sides of a boundary: about 1e-7 relative, so rarely).

use crate::backend::Backend;
use crate::model::{Acts, Decoder, KvCache};
use crate::ops::sample::Sampling;
use crate::ops::Float;
use crate::util::rng::Rng;
use anyhow::{bail, Result};

#[derive(Clone, Debug)]
pub struct SampleConfig {
    pub max_new_tokens: usize,
    /// Softmax temperature (> 0); 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f64,
    /// Stop a row when it emits this token (the token is kept in the output).
    pub stop: Option<u32>,
}

impl SampleConfig {
    /// How each token is chosen from its logits.
    pub fn sampling(&self) -> Sampling {
        Sampling { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New tokens, ending with the stop token when `ended`.
    pub tokens: Vec<u32>,
    /// log p(token) under the temperature-scaled distribution, one per token.
    pub logprobs: Vec<f32>,
    /// Whether the row stopped on the stop token (false: it hit `max_new_tokens`).
    pub ended: bool,
}

impl<B: Backend> Decoder<B> {
    /// Logits [rows.len(), Vp] on the device for the given flat positions (b*T + t) of the last forward: the
    /// hidden states of those rows gathered (one copy; none when they are all the rows, in order), then the
    /// LM head over them alone.
    fn logits_rows(&self, be: &B, a: &Acts<B>, rows: &[usize]) -> Result<B::Buf> {
        let (c, vp) = (self.cfg.n_embd, self.cfg.padded_vocab());
        let gathered;
        let h = if rows.len() == a.b * a.t && rows.iter().enumerate().all(|(i, &r)| i == r) {
            &a.lnf
        } else {
            let mut g = be.zeros(rows.len() * c)?;
            let pairs: Vec<(u32, u32)> = rows.iter().enumerate().map(|(i, &r)| (i as u32, r as u32)).collect();
            be.copy_rows(&mut g, &a.lnf, c, &pairs);
            gathered = g;
            &gathered
        };
        let mut logits = be.zeros_full(rows.len() * vp)?;
        be.matmul(&mut logits, h, self.lm_head(), rows.len(), vp, c, false, true, false);
        Ok(logits)
    }

    /// Logits [rows.len(), V] for the given flat positions (b*T + t) of the last forward, on the host.
    pub fn logits_at(&self, be: &B, a: &Acts<B>, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let (v, vp) = (self.cfg.vocab_size, self.cfg.padded_vocab());
        let host = be.download(&self.logits_rows(be, a, rows)?);
        Ok(host.chunks(vp).map(|r| r[..v].iter().map(|x| x.f64() as f32).collect()).collect())
    }
}

/// Sample a continuation for every prompt in one batch. `rngs` holds one generator shared by all rows
/// (drawn row by row at each step) or one per row (then a row's answer does not depend on the other rows
/// of the batch: a pure function of its prompt and its generator).
pub fn generate<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    prompts: &[Vec<u32>],
    sc: &SampleConfig,
    rngs: &mut [Rng],
) -> Result<Vec<Generation>> {
    generate_with(be, model, prompts, sc, rngs, |_, _| Ok(()))
}

/// [`generate`], calling `on_token(row, token)` as each new token is chosen (step by step, rows in order).
pub fn generate_with<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    prompts: &[Vec<u32>],
    sc: &SampleConfig,
    rngs: &mut [Rng],
    on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<Generation>> {
    let b = prompts.len();
    if b == 0 {
        return Ok(vec![]);
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {i} is empty: sampling needs at least one token");
    }
    let tp = prompts.iter().map(Vec::len).max().unwrap();
    let capacity = tp + sc.max_new_tokens;
    let ctx = model.cfg.n_positions;
    if capacity > ctx {
        bail!("prompt of {tp} tokens + {} new tokens exceeds the model's context of {ctx} tokens", sc.max_new_tokens);
    }
    let mut cache = KvCache::new(be, &model.cfg, b, capacity)?;
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    // Prefill: all prompts, right-padded with their own last token (any valid id would do).
    let mut acts = Acts::for_inference(be, &model.cfg, b, tp)?;
    let padded: Vec<u32> = prompts
        .iter()
        .flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(*p.last().unwrap(), tp - p.len())))
        .collect();
    model.forward(be, &mut acts, &padded, None, Some(&mut cache))?;
    let rows: Vec<usize> = (0..b).map(|i| i * tp + lens[i] - 1).collect();
    let logits = model.logits_rows(be, &acts, &rows)?;
    decode(be, model, &mut cache, logits, &lens, sc, rngs, on_token)
}

/// The per-token loop of [`generate_with`] and [`Conversation::answer`]. Row i's next-token logits are
/// row i of `logits` [B, Vp] (on the device) and its next token goes to position `next_pos[i]` of `cache`; each step picks a token per
/// live row, reports it, and feeds the live rows one token each, until every row has ended or
/// `max_new_tokens` are chosen. The last chosen token of a row is never fed (nothing reads its logits).
/// A row that ends leaves the batch: the cache is compacted to the live rows, so finished rows cost no
/// work (each row's computation is independent of the others', so the results do not change).
#[allow(clippy::too_many_arguments)]
fn decode<B: Backend>(
    be: &B,
    model: &Decoder<B>,
    cache: &mut KvCache<B>,
    mut logits: B::Buf,
    next_pos: &[usize],
    sc: &SampleConfig,
    rngs: &mut [Rng],
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<Generation>> {
    let (b, v, vp) = (next_pos.len(), model.cfg.vocab_size, model.cfg.padded_vocab());
    if rngs.len() != 1 && rngs.len() != b {
        bail!("{} generators for {b} rows (one shared, or one per row)", rngs.len());
    }
    let mut out: Vec<Generation> = vec![Generation { tokens: vec![], logprobs: vec![], ended: false }; b];
    // The rows still in the batch, in order: slot k of the cache and of `logits` is row live[k].
    let mut live: Vec<usize> = (0..b).collect();
    let mut step_acts = Acts::for_inference(be, &model.cfg, b, 1)?;
    for step in 0..sc.max_new_tokens {
        let u: Vec<f64> = live
            .iter()
            .map(|&i| match (sc.sampling().draws(), rngs.len()) {
                (false, _) => 0.0,
                (true, 1) => rngs[0].uniform(),
                (true, _) => rngs[i].uniform(),
            })
            .collect();
        for (&i, (tok, lp)) in live.iter().zip(be.sample(&logits, v, vp, &sc.sampling(), &u)?) {
            out[i].tokens.push(tok);
            out[i].logprobs.push(lp);
            out[i].ended = sc.stop == Some(tok);
            on_token(i, tok)?;
        }
        if step + 1 == sc.max_new_tokens {
            break;
        }
        let keep: Vec<usize> = (0..live.len()).filter(|&k| !out[live[k]].ended).collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            cache.retain(be, &keep)?;
            live = keep.iter().map(|&k| live[k]).collect();
            step_acts = Acts::for_inference(be, &model.cfg, live.len(), 1)?;
        }
        let next: Vec<u32> = live.iter().map(|&i| *out[i].tokens.last().unwrap()).collect();
        let pos: Vec<u32> = live.iter().map(|&i| (next_pos[i] + step) as u32).collect();
        model.forward(be, &mut step_acts, &next, Some(&pos), Some(cache))?;
        logits = model.logits_rows(be, &step_acts, &(0..live.len()).collect::<Vec<_>>())?;
    }
    Ok(out)
}

/// Incremental decoding of one conversation: a one-row KV cache over the whole context and the tokens it
/// stands for, so each new turn runs the forward over its own tokens only, never over the history again.
pub struct Conversation<'m, B: Backend> {
    model: &'m Decoder<B>,
    cache: KvCache<B>,
    /// The conversation so far; the first `cached` are in the cache, the rest go in with the next feed.
    tokens: Vec<u32>,
    cached: usize,
}

impl<'m, B: Backend> Conversation<'m, B> {
    /// An empty conversation with a cache of the model's whole context (n_positions).
    pub fn new(be: &B, model: &'m Decoder<B>) -> Result<Self> {
        let cache = KvCache::new(be, &model.cfg, 1, model.cfg.n_positions)?;
        Ok(Conversation { model, cache, tokens: vec![], cached: 0 })
    }

    /// Every token of the conversation so far (prompts and answers).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The model's context (n_positions): the most tokens a conversation can hold.
    pub fn context(&self) -> usize {
        self.model.cfg.n_positions
    }

    /// Append `tokens` to the conversation without running the model: they go in with the next feed.
    pub fn append(&mut self, tokens: &[u32]) -> Result<()> {
        if self.tokens.len() + tokens.len() > self.context() {
            bail!(
                "appending {} tokens to {} overflows the context of {}",
                tokens.len(),
                self.tokens.len(),
                self.context()
            );
        }
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Forget the conversation (the cache's contents are overwritten by the next feed).
    pub fn reset(&mut self) {
        self.tokens.clear();
        self.cached = 0;
    }

    /// Append `new` to the conversation and run the forward over the tokens not yet in the cache (the last
    /// answer's final token, then `new`), at their positions. Returns the next-token logits [V] after the
    /// last token.
    pub fn feed(&mut self, be: &B, new: &[u32]) -> Result<Vec<f32>> {
        let v = self.model.cfg.vocab_size;
        Ok(be.download(&self.feed_device(be, new)?)[..v].iter().map(|x| x.f64() as f32).collect())
    }

    /// [`Conversation::feed`], leaving the logits [1, Vp] on the device.
    fn feed_device(&mut self, be: &B, new: &[u32]) -> Result<B::Buf> {
        let ctx = self.context();
        if self.tokens.len() + new.len() > ctx {
            bail!(
                "{} tokens of conversation + {} new ones exceed the model's context of {ctx} tokens",
                self.tokens.len(),
                new.len()
            );
        }
        let todo: Vec<u32> = self.tokens[self.cached..].iter().chain(new).copied().collect();
        if todo.is_empty() {
            bail!("nothing to feed: the conversation is empty");
        }
        let mut acts = Acts::for_inference(be, &self.model.cfg, 1, todo.len())?;
        self.model.forward(be, &mut acts, &todo, Some(&[self.cached as u32]), Some(&mut self.cache))?;
        self.tokens.extend_from_slice(new);
        self.cached = self.tokens.len();
        self.model.logits_rows(be, &acts, &[todo.len() - 1])
    }

    /// Feed `prompt` and sample the answer, calling `on_token` with each token as it is chosen; the answer
    /// joins the conversation. Refused (with the conversation unchanged) when the prompt and
    /// `max_new_tokens` do not fit in the context.
    pub fn answer(
        &mut self,
        be: &B,
        prompt: &[u32],
        sc: &SampleConfig,
        rng: &mut Rng,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        let (ctx, end) = (self.context(), self.tokens.len() + prompt.len());
        if end + sc.max_new_tokens > ctx + 1 {
            bail!(
                "{end} tokens of conversation + {} new tokens exceed the model's context of {ctx} tokens",
                sc.max_new_tokens
            );
        }
        let logits = self.feed_device(be, prompt)?;
        let next_pos = [self.tokens.len()];
        let g = decode(be, self.model, &mut self.cache, logits, &next_pos, sc, std::slice::from_mut(rng), |_, t| {
            on_token(t)
        })?
        .remove(0);
        self.tokens.extend_from_slice(&g.tokens);
        self.cached = self.tokens.len() - usize::from(!g.tokens.is_empty());
        Ok(g)
    }
}
