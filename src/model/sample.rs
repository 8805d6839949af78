//! Batched autoregressive sampling with a KV cache.
//!
//! Prompts of different lengths are right-padded into one [B, Tp] prefill; causal attention means a row's
//! real tokens never see its padding. Row b's first new token is predicted at position len_b - 1 and
//! written at len_b, overwriting padding in the cache; from then on each step feeds one token per row at
//! its own position, so every new token costs one O(T) attention over the cache, not a re-run of the
//! prefix. The log-probability of each chosen token is taken under the temperature-scaled distribution
//! (before top-k / top-p filtering), which is what PPO's ratio needs.

use crate::backend::Backend;
use crate::model::{Acts, Gpt2, KvCache};
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

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// New tokens, ending with the stop token when `ended`.
    pub tokens: Vec<u32>,
    /// log p(token) under the temperature-scaled distribution, one per token.
    pub logprobs: Vec<f32>,
    /// Whether the row stopped on the stop token (false: it hit `max_new_tokens`).
    pub ended: bool,
}

impl<B: Backend> Gpt2<B> {
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
        be.matmul(&mut logits, h, self.params.named().wte, rows.len(), vp, c, false, true, false);
        Ok(logits)
    }

    /// Logits [rows.len(), V] for the given flat positions (b*T + t) of the last forward, on the host.
    pub fn logits_at(&self, be: &B, a: &Acts<B>, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        let (v, vp) = (self.cfg.vocab_size, self.cfg.padded_vocab());
        let host = be.download(&self.logits_rows(be, a, rows)?);
        Ok(host.chunks(vp).map(|r| r[..v].iter().map(|x| x.f64() as f32).collect()).collect())
    }
}

/// Pick a token from `logits` (one row) and return it with its temperature-scaled log-probability.
/// Non-finite logits (a diverged model) are an error, not a token.
///
/// Cost per row: O(V) without top-k/top-p (one pass for the log-sum-exp, one inverse-CDF pass in id
/// order); with top-k, a partial selection of the k largest (O(V)) and a sort of those k; with top-p
/// alone, a sort of the ids by logit (the nucleus can be any size), and with both, the top-p cut is made
/// on the sorted top-k set.
pub fn pick(logits: &[f32], sc: &SampleConfig, rng: &mut Rng) -> Result<(u32, f32)> {
    if let Some((i, x)) = logits.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        bail!("the model's logit for token {i} is {x}: its weights or activations are not finite");
    }
    let t = if sc.temperature > 0.0 { sc.temperature } else { 1.0 };
    let z: Vec<f64> = logits.iter().map(|&x| x as f64 / t).collect();
    let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + z.iter().map(|&x| (x - mx).exp()).sum::<f64>().ln();
    let tok = if sc.temperature <= 0.0 {
        // First maximum, so ties break towards the lower id (as torch.argmax does).
        z.iter().enumerate().fold(0, |best, (i, &x)| if x > z[best] { i } else { best })
    } else if sc.top_k == 0 && sc.top_p >= 1.0 {
        let total: f64 = z.iter().map(|&x| (x - mx).exp()).sum();
        draw((0..z.len()).map(|i| (i, (z[i] - mx).exp())), total, rng)
    } else {
        // Descending by logit, ties towards the lower id.
        let order = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
        let mut idx: Vec<usize> = (0..z.len()).collect();
        let mut keep = idx.len();
        if sc.top_k > 0 && sc.top_k < idx.len() {
            idx.select_nth_unstable_by(sc.top_k - 1, order);
            keep = sc.top_k;
        }
        idx[..keep].sort_unstable_by(order);
        if sc.top_p < 1.0 {
            let mut cum = 0.0;
            for (n, &i) in idx[..keep].iter().enumerate() {
                cum += (z[i] - lse).exp();
                if cum >= sc.top_p {
                    keep = n + 1;
                    break;
                }
            }
        }
        let kept = &idx[..keep];
        let total: f64 = kept.iter().map(|&i| (z[i] - mx).exp()).sum();
        draw(kept.iter().map(|&i| (i, (z[i] - mx).exp())), total, rng)
    };
    Ok((tok as u32, (z[tok] - lse) as f32))
}

/// Inverse-CDF draw from (id, unnormalised weight) pairs summing to `total`: the first id at which the
/// running sum reaches u * total (the last id if rounding leaves u above the sum).
fn draw(weights: impl Iterator<Item = (usize, f64)>, total: f64, rng: &mut Rng) -> usize {
    let mut u = rng.uniform() * total;
    let mut last = 0;
    for (i, w) in weights {
        last = i;
        u -= w;
        if u <= 0.0 {
            return i;
        }
    }
    last
}

/// Sample a continuation for every prompt in one batch. `rngs` holds one generator shared by all rows
/// (drawn row by row at each step) or one per row (then a row's answer does not depend on the other rows
/// of the batch: a pure function of its prompt and its generator).
pub fn generate<B: Backend>(
    be: &B,
    model: &Gpt2<B>,
    prompts: &[Vec<u32>],
    sc: &SampleConfig,
    rngs: &mut [Rng],
) -> Result<Vec<Generation>> {
    generate_with(be, model, prompts, sc, rngs, |_, _| Ok(()))
}

/// [`generate`], calling `on_token(row, token)` as each new token is chosen (step by step, rows in order).
pub fn generate_with<B: Backend>(
    be: &B,
    model: &Gpt2<B>,
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
    let mut acts = Acts::new(be, &model.cfg, b, tp)?;
    let padded: Vec<u32> = prompts
        .iter()
        .flat_map(|p| p.iter().copied().chain(std::iter::repeat_n(*p.last().unwrap(), tp - p.len())))
        .collect();
    model.forward(be, &mut acts, &padded, None, Some(&mut cache))?;
    let rows: Vec<usize> = (0..b).map(|i| i * tp + lens[i] - 1).collect();
    let logits = model.logits_at(be, &acts, &rows)?;
    decode(be, model, &mut cache, logits, &lens, sc, rngs, on_token)
}

/// The per-token loop of [`generate_with`] and [`Decoder::answer`]. Row i's next-token logits are
/// `logits[i]` and its next token goes to position `next_pos[i]` of `cache`; each step picks a token per
/// live row, reports it, and feeds the live rows one token each, until every row has ended or
/// `max_new_tokens` are chosen. The last chosen token of a row is never fed (nothing reads its logits).
/// A row that ends leaves the batch: the cache is compacted to the live rows, so finished rows cost no
/// work (each row's computation is independent of the others', so the results do not change).
#[allow(clippy::too_many_arguments)]
fn decode<B: Backend>(
    be: &B,
    model: &Gpt2<B>,
    cache: &mut KvCache<B>,
    mut logits: Vec<Vec<f32>>,
    next_pos: &[usize],
    sc: &SampleConfig,
    rngs: &mut [Rng],
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Vec<Generation>> {
    let b = logits.len();
    if rngs.len() != 1 && rngs.len() != b {
        bail!("{} generators for {b} rows (one shared, or one per row)", rngs.len());
    }
    let mut out: Vec<Generation> = vec![Generation { tokens: vec![], logprobs: vec![], ended: false }; b];
    // The rows still in the batch, in order: slot k of the cache and of `logits` is row live[k].
    let mut live: Vec<usize> = (0..b).collect();
    let mut step_acts = Acts::new(be, &model.cfg, b, 1)?;
    for step in 0..sc.max_new_tokens {
        for (k, &i) in live.iter().enumerate() {
            let rng = if rngs.len() == 1 { &mut rngs[0] } else { &mut rngs[i] };
            let (tok, lp) = pick(&logits[k], sc, rng)?;
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
            step_acts = Acts::new(be, &model.cfg, live.len(), 1)?;
        }
        let next: Vec<u32> = live.iter().map(|&i| *out[i].tokens.last().unwrap()).collect();
        let pos: Vec<u32> = live.iter().map(|&i| (next_pos[i] + step) as u32).collect();
        model.forward(be, &mut step_acts, &next, Some(&pos), Some(cache))?;
        logits = model.logits_at(be, &step_acts, &(0..live.len()).collect::<Vec<_>>())?;
    }
    Ok(out)
}

/// Incremental decoding of one conversation: a one-row KV cache over the whole context and the tokens it
/// stands for, so each new turn runs the forward over its own tokens only, never over the history again.
pub struct Decoder<'m, B: Backend> {
    model: &'m Gpt2<B>,
    cache: KvCache<B>,
    /// The conversation so far; the first `cached` are in the cache, the rest go in with the next feed.
    tokens: Vec<u32>,
    cached: usize,
}

impl<'m, B: Backend> Decoder<'m, B> {
    /// An empty conversation with a cache of the model's whole context (n_positions).
    pub fn new(be: &B, model: &'m Gpt2<B>) -> Result<Self> {
        let cache = KvCache::new(be, &model.cfg, 1, model.cfg.n_positions)?;
        Ok(Decoder { model, cache, tokens: vec![], cached: 0 })
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
        let mut acts = Acts::new(be, &self.model.cfg, 1, todo.len())?;
        self.model.forward(be, &mut acts, &todo, Some(&[self.cached as u32]), Some(&mut self.cache))?;
        self.tokens.extend_from_slice(new);
        self.cached = self.tokens.len();
        Ok(self.model.logits_at(be, &acts, &[todo.len() - 1])?.remove(0))
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
        let logits = self.feed(be, prompt)?;
        let next_pos = [self.tokens.len()];
        let g =
            decode(be, self.model, &mut self.cache, vec![logits], &next_pos, sc, std::slice::from_mut(rng), |_, t| {
                on_token(t)
            })?
            .remove(0);
        self.tokens.extend_from_slice(&g.tokens);
        self.cached = self.tokens.len() - usize::from(!g.tokens.is_empty());
        Ok(g)
    }
}
