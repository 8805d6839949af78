//! The GPT-2 decoder over any [`Backend`]: parameters, activations, forward, backward, KV cache.
//!
//! Architecture (pre-norm, tied LM head), for tokens [B,T]:
//!   x0 = wte[tokens] + wpe[pos]
//!   per block l:  x = x + attn_proj(attention(c_attn(ln_1(x))));   x = x + mlp_proj(gelu(c_fc(ln_2(x))))
//!   h = ln_f(x);   logits = h @ wte^T
//! (each residual add is computed together with the layernorm that reads it: `residual_layernorm_forward`)
//! The forward keeps every activation the backward needs (llm.c style: one named buffer each); the
//! backward walks the same list in reverse, each line the backward of one forward line.

use super::{Config, ParamSpec};
use crate::backend::Backend;
use crate::ops::Float;
use crate::util::rng::Rng;
use anyhow::{bail, Result};

/// A list of tensors in the canonical order of `Config::param_specs`: the parameters, their gradients, or
/// optimizer moments, stored flat (multi-tensor ops such as AdamW walk the list) and addressed by name
/// through [`Tensors::named`] / [`Tensors::named_mut`]. `wte` is held padded to [Vp, C] on the device (zero
/// rows past V) so logits rows are Vp wide.
pub struct Tensors<B: Backend> {
    pub bufs: Vec<B::Buf>,
}

/// The model's tensors by name (`T` is `&Buf` or `&mut Buf`), shapes as GPT-2 stores them.
pub struct Named<T> {
    pub wte: T, // [Vp, C] (V rows used)
    pub wpe: T, // [maxT, C]
    pub blocks: Vec<Block<T>>,
    pub ln_f_w: T, // [C]
    pub ln_f_b: T, // [C]
}

/// One block's tensors by name.
pub struct Block<T> {
    pub ln_1_w: T,      // [C]
    pub ln_1_b: T,      // [C]
    pub c_attn_w: T,    // [C, 3C]
    pub c_attn_b: T,    // [3C]
    pub attn_proj_w: T, // [C, C]
    pub attn_proj_b: T, // [C]
    pub ln_2_w: T,      // [C]
    pub ln_2_b: T,      // [C]
    pub c_fc_w: T,      // [C, 4C]
    pub c_fc_b: T,      // [4C]
    pub mlp_proj_w: T,  // [4C, C]
    pub mlp_proj_b: T,  // [C]
}

/// Name the tensors of a canonical list: the one place that knows its order (`Config::param_specs`).
fn name_list<T>(mut it: impl Iterator<Item = T>, n_layer: usize) -> Named<T> {
    let mut next = || it.next().expect("a tensor list in the canonical order");
    let (wte, wpe) = (next(), next());
    let blocks = (0..n_layer)
        .map(|_| Block {
            ln_1_w: next(),
            ln_1_b: next(),
            c_attn_w: next(),
            c_attn_b: next(),
            attn_proj_w: next(),
            attn_proj_b: next(),
            ln_2_w: next(),
            ln_2_b: next(),
            c_fc_w: next(),
            c_fc_b: next(),
            mlp_proj_w: next(),
            mlp_proj_b: next(),
        })
        .collect();
    let (ln_f_w, ln_f_b) = (next(), next());
    Named { wte, wpe, blocks, ln_f_w, ln_f_b }
}

/// Tensors per block in the canonical list, and the index of `wte` (first: padded to Vp rows on the device).
const PER_LAYER: usize = 12;
const WTE: usize = 0;

impl<B: Backend> Tensors<B> {
    pub fn zeros(be: &B, cfg: &Config) -> Result<Self> {
        let bufs = device_shapes(cfg).iter().map(|&n| be.zeros(n)).collect::<Result<_>>()?;
        Ok(Tensors { bufs })
    }
    pub fn named(&self) -> Named<&B::Buf> {
        name_list(self.bufs.iter(), self.n_layer())
    }
    pub fn named_mut(&mut self) -> Named<&mut B::Buf> {
        let n_layer = self.n_layer();
        name_list(self.bufs.iter_mut(), n_layer)
    }
    fn n_layer(&self) -> usize {
        (self.bufs.len() - 4) / PER_LAYER
    }
    pub fn fill_zero(&mut self, be: &B) {
        self.bufs.iter_mut().for_each(|b| be.fill_zero(b));
    }
}

/// Element counts of the device tensors (wte padded to Vp rows).
fn device_shapes(cfg: &Config) -> Vec<usize> {
    cfg.param_specs()
        .iter()
        .enumerate()
        .map(|(i, s)| if i == WTE { cfg.padded_vocab() * cfg.n_embd } else { s.numel() })
        .collect()
}

pub struct Gpt2<B: Backend> {
    pub cfg: Config,
    pub params: Tensors<B>,
}

/// One block's saved activations.
pub struct LayerActs<B: Backend> {
    ln1: B::Buf,      // [B,T,C]
    ln1_mean: B::Buf, // [B,T]
    ln1_rstd: B::Buf, // [B,T]
    qkv: B::Buf,      // [B,T,3C]
    atty: B::Buf,     // [B,T,C]
    lse: B::Buf,      // [B,NH,T]
    res2: B::Buf,     // [B,T,C]  x after the attention residual
    ln2: B::Buf,
    ln2_mean: B::Buf,
    ln2_rstd: B::Buf,
    fch: B::Buf,      // [B,T,4C]
    fch_gelu: B::Buf, // [B,T,4C]
    res3: B::Buf,     // [B,T,C]  the block's output
}

/// Activations and gradient scratch for a batch of shape [B,T].
pub struct Acts<B: Backend> {
    pub b: usize,
    pub t: usize,
    tokens: Option<B::Ids>,
    pos0: Vec<u32>,
    encoded: B::Buf,
    layers: Vec<LayerActs<B>>,
    /// Final hidden states h = ln_f(x) [B,T,C]: what the reward and value heads read.
    pub lnf: B::Buf,
    lnf_mean: B::Buf,
    lnf_rstd: B::Buf,
    /// Logits [B,T,Vp]; after `lm_loss` with a gradient, dL/dlogits.
    pub logits: B::Buf,
    /// Per-token -log p(target) [B,T] from the last `lm_loss`.
    pub losses: B::Buf,
    scratch: B::Buf, // [B,T,C]
    // gradient scratch
    /// Gradient of the final hidden states [B,T,C]; heads add into it before `backward`.
    pub dlnf: B::Buf,
    dres: B::Buf,
    dln: B::Buf,
    datty: B::Buf,
    dqkv: B::Buf,
    dfch: B::Buf,
    dfch_gelu: B::Buf,
}

impl<B: Backend> Acts<B> {
    pub fn new(be: &B, cfg: &Config, b: usize, t: usize) -> Result<Self> {
        if t > cfg.n_positions {
            bail!("sequence length {t} exceeds the model's context n_positions = {}", cfg.n_positions);
        }
        let (c, n) = (cfg.n_embd, b * t);
        let z = |k: usize| be.zeros(k);
        let layers = (0..cfg.n_layer)
            .map(|_| {
                Ok(LayerActs {
                    ln1: z(n * c)?,
                    ln1_mean: z(n)?,
                    ln1_rstd: z(n)?,
                    qkv: z(n * 3 * c)?,
                    atty: z(n * c)?,
                    lse: z(b * cfg.n_head * t)?,
                    res2: z(n * c)?,
                    ln2: z(n * c)?,
                    ln2_mean: z(n)?,
                    ln2_rstd: z(n)?,
                    fch: z(n * 4 * c)?,
                    fch_gelu: z(n * 4 * c)?,
                    res3: z(n * c)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Acts {
            b,
            t,
            tokens: None,
            pos0: vec![0; b],
            encoded: z(n * c)?,
            layers,
            lnf: z(n * c)?,
            lnf_mean: z(n)?,
            lnf_rstd: z(n)?,
            logits: be.zeros_full(n * cfg.padded_vocab())?,
            losses: z(n)?,
            scratch: z(n * c)?,
            dlnf: z(n * c)?,
            dres: z(n * c)?,
            dln: z(n * c)?,
            datty: z(n * c)?,
            dqkv: z(n * 3 * c)?,
            dfch: z(n * 4 * c)?,
            dfch_gelu: z(n * 4 * c)?,
        })
    }
}

/// Keys and values of every block for incremental decoding: per block a [B, maxT, 3C] buffer holding the
/// qkv rows of every position seen so far (the q third is unused; the layout matches the training qkv, so
/// one attention op serves both).
pub struct KvCache<B: Backend> {
    pub b: usize,
    pub capacity: usize,
    layers: Vec<B::Buf>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(be: &B, cfg: &Config, b: usize, capacity: usize) -> Result<Self> {
        if capacity > cfg.n_positions {
            bail!("KV cache length {capacity} exceeds the model's context n_positions = {}", cfg.n_positions);
        }
        let layers = (0..cfg.n_layer).map(|_| be.zeros(b * capacity * 3 * cfg.n_embd)).collect::<Result<_>>()?;
        Ok(KvCache { b, capacity, layers })
    }

    /// Keep only the rows `keep` (ascending indices of the current rows), which become rows 0, 1, ...: the
    /// batch then runs on those rows alone. One copy per layer into a buffer of the new size.
    pub fn retain(&mut self, be: &B, keep: &[usize]) -> Result<()> {
        if let Some(&bad) = keep.iter().find(|&&r| r >= self.b) {
            bail!("KV cache row {bad} kept out of {} rows", self.b);
        }
        let w = be.len(&self.layers[0]) / self.b;
        let rows: Vec<(u32, u32)> = keep.iter().enumerate().map(|(i, &r)| (i as u32, r as u32)).collect();
        for layer in &mut self.layers {
            let mut kept = be.zeros(keep.len() * w)?;
            be.copy_rows(&mut kept, layer, w, &rows);
            *layer = kept;
        }
        self.b = keep.len();
        Ok(())
    }
}

impl<B: Backend> Gpt2<B> {
    /// GPT-2 initialisation: weights N(0, 0.02), the residual projections (attn.c_proj, mlp.c_proj)
    /// N(0, 0.02/sqrt(2 L)), biases 0, layernorm gains 1.
    pub fn init(be: &B, cfg: Config, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::new(seed);
        let resid_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        let host: Vec<Vec<f32>> = cfg
            .param_specs()
            .iter()
            .map(|s| {
                let n = s.numel();
                if s.name.ends_with("ln_1.weight") || s.name.ends_with("ln_2.weight") || s.name == "ln_f.weight" {
                    vec![1.0; n]
                } else if s.shape.len() == 1 {
                    vec![0.0; n]
                } else {
                    let std = if s.name.ends_with("c_proj.weight") { resid_std } else { 0.02 };
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                }
            })
            .collect();
        Self::from_host(be, cfg, &host)
    }

    /// Build from host tensors in the canonical order and shapes of `cfg.param_specs()` (wte unpadded).
    pub fn from_host(be: &B, cfg: Config, tensors: &[Vec<f32>]) -> Result<Self> {
        let specs = cfg.param_specs();
        if tensors.len() != specs.len() {
            bail!("expected {} parameter tensors, got {}", specs.len(), tensors.len());
        }
        let mut bufs = Vec::with_capacity(specs.len());
        for (i, (spec, data)) in specs.iter().zip(tensors).enumerate() {
            if data.len() != spec.numel() {
                bail!(
                    "tensor '{}' has {} elements, expected {} for shape {:?}",
                    spec.name,
                    data.len(),
                    spec.numel(),
                    spec.shape
                );
            }
            let mut v: Vec<B::F> = data.iter().map(|&x| B::F::of(x as f64)).collect();
            if i == WTE {
                v.resize(cfg.padded_vocab() * cfg.n_embd, <B::F as num_traits::Zero>::zero());
            }
            bufs.push(be.upload(&v)?);
        }
        Ok(Gpt2 { cfg, params: Tensors { bufs } })
    }

    /// The parameters as host f32 tensors in canonical order and shapes (wte unpadded).
    pub fn to_host(&self, be: &B) -> Vec<(ParamSpec, Vec<f32>)> {
        tensors_to_host(be, &self.cfg, &self.params)
    }

    /// The same model with its vocabulary grown to `vocab` tokens (e.g. GPT-2 + the chat tokens): the new
    /// `wte` rows start as the mean of the existing ones, so new tokens begin as an "average" token.
    pub fn grow_vocab(&self, be: &B, vocab: usize) -> Result<Self> {
        let old = self.cfg.vocab_size;
        if vocab < old {
            bail!("cannot shrink the vocabulary from {old} to {vocab} tokens");
        }
        let c = self.cfg.n_embd;
        let mut host: Vec<Vec<f32>> = self.to_host(be).into_iter().map(|(_, v)| v).collect();
        let wte = name_list(host.iter_mut(), self.cfg.n_layer).wte;
        let mean: Vec<f32> =
            (0..c).map(|k| (0..old).map(|r| wte[r * c + k] as f64).sum::<f64>() as f32 / old as f32).collect();
        for _ in old..vocab {
            wte.extend_from_slice(&mean);
        }
        Self::from_host(be, Config { vocab_size: vocab, ..self.cfg }, &host)
    }

    /// Forward through ln_f for tokens [B,T] (row b starting at absolute position pos0[b]; None = 0).
    /// With a KV cache, each block appends its keys/values at pos0[b].. and attends to the cache.
    pub fn forward(
        &self,
        be: &B,
        a: &mut Acts<B>,
        tokens: &[u32],
        pos0: Option<&[u32]>,
        mut cache: Option<&mut KvCache<B>>,
    ) -> Result<()> {
        let (b, t, c, nh) = (a.b, a.t, self.cfg.n_embd, self.cfg.n_head);
        let n = b * t;
        if tokens.len() != n {
            bail!("forward: {} tokens for a batch of {b} x {t}", tokens.len());
        }
        if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= self.cfg.vocab_size) {
            bail!("token id {bad} is outside the model's vocabulary ({})", self.cfg.vocab_size);
        }
        a.pos0 = pos0.map_or(vec![0; b], <[u32]>::to_vec);
        let limit = cache.as_ref().map_or(self.cfg.n_positions, |kv| kv.capacity);
        if let Some(p) = a.pos0.iter().find(|&&p| p as usize + t > limit) {
            bail!("positions {p}..{} exceed the context ({limit})", *p as usize + t);
        }
        if let Some(kv) = cache.as_ref().filter(|kv| kv.b != b) {
            bail!("forward: a KV cache of {} rows for a batch of {b}", kv.b);
        }
        // With a cache, row bi's qkv rows go to positions pos0[bi].. of its cache row (one copy per layer).
        let append: Vec<(u32, u32)> = match cache {
            Some(ref kv) => (0..b)
                .flat_map(|bi| (0..t).map(move |j| (bi, j)))
                .map(|(bi, j)| ((bi * kv.capacity + a.pos0[bi] as usize + j) as u32, (bi * t + j) as u32))
                .collect(),
            None => vec![],
        };
        let p = self.params.named();
        let ids = be.upload_ids(tokens)?;
        be.encoder_forward(&mut a.encoded, &ids, p.wte, p.wpe, &a.pos0, t, c);
        a.tokens = Some(ids);
        // Each block's closing residual add is fused with the layernorm that reads it: ln_2 inside the
        // block, then ln_1 of the next block (ln_f after the last).
        {
            let l0 = &mut a.layers[0];
            be.layernorm_forward(
                &mut l0.ln1,
                &mut l0.ln1_mean,
                &mut l0.ln1_rstd,
                &a.encoded,
                p.blocks[0].ln_1_w,
                p.blocks[0].ln_1_b,
                c,
            );
        }
        for l in 0..self.cfg.n_layer {
            let (done, rest) = a.layers.split_at_mut(l);
            let x = if l == 0 { &a.encoded } else { &done[l - 1].res3 };
            let (la, next) = rest.split_first_mut().expect("layer l exists");
            let w = &p.blocks[l];
            be.linear_forward(&mut la.qkv, &la.ln1, w.c_attn_w, Some(w.c_attn_b), n, c, 3 * c);
            match cache.as_deref_mut() {
                Some(kv) => {
                    be.copy_rows(&mut kv.layers[l], &la.qkv, 3 * c, &append);
                    be.attention_forward(
                        &mut la.atty,
                        &mut la.lse,
                        &la.qkv,
                        &kv.layers[l],
                        &a.pos0,
                        b,
                        t,
                        kv.capacity,
                        c,
                        nh,
                        nh,
                    );
                }
                None => be.attention_forward(&mut la.atty, &mut la.lse, &la.qkv, &la.qkv, &a.pos0, b, t, t, c, nh, nh),
            }
            be.linear_forward(&mut a.scratch, &la.atty, w.attn_proj_w, Some(w.attn_proj_b), n, c, c);
            be.residual_layernorm_forward(
                &mut la.res2,
                &mut la.ln2,
                &mut la.ln2_mean,
                &mut la.ln2_rstd,
                x,
                &a.scratch,
                w.ln_2_w,
                w.ln_2_b,
                c,
            );
            be.linear_forward(&mut la.fch, &la.ln2, w.c_fc_w, Some(w.c_fc_b), n, c, 4 * c);
            be.gelu_forward(&mut la.fch_gelu, &la.fch);
            be.linear_forward(&mut a.scratch, &la.fch_gelu, w.mlp_proj_w, Some(w.mlp_proj_b), n, 4 * c, c);
            match next.first_mut() {
                Some(nl) => {
                    let (w, bias) = (p.blocks[l + 1].ln_1_w, p.blocks[l + 1].ln_1_b);
                    be.residual_layernorm_forward(
                        &mut la.res3,
                        &mut nl.ln1,
                        &mut nl.ln1_mean,
                        &mut nl.ln1_rstd,
                        &la.res2,
                        &a.scratch,
                        w,
                        bias,
                        c,
                    );
                }
                None => {
                    let (w, bias) = (p.ln_f_w, p.ln_f_b);
                    be.residual_layernorm_forward(
                        &mut la.res3,
                        &mut a.lnf,
                        &mut a.lnf_mean,
                        &mut a.lnf_rstd,
                        &la.res2,
                        &a.scratch,
                        w,
                        bias,
                        c,
                    );
                }
            }
        }
        Ok(())
    }

    /// logits [B,T,Vp] = h @ wte^T.
    pub fn logits(&self, be: &B, a: &mut Acts<B>) {
        let (n, c, vp) = (a.b * a.t, self.cfg.n_embd, self.cfg.padded_vocab());
        be.matmul(&mut a.logits, &a.lnf, self.params.named().wte, n, vp, c, false, true, false);
    }

    /// LM head + fused cross-entropy: per-token losses -log p(target) (temperature-scaled by `inv_temp`),
    /// and returns L = sum_i weights[i] * losses[i]. With `grads`, also backpropagates L through the head:
    /// dwte += dlogits^T h and `a.dlnf` = dlogits @ wte (overwritten).
    pub fn lm_loss(
        &self,
        be: &B,
        a: &mut Acts<B>,
        targets: &[u32],
        weights: &[f32],
        inv_temp: f64,
        grads: Option<&mut Tensors<B>>,
    ) -> Result<f64> {
        let (n, v, vp) = (a.b * a.t, self.cfg.vocab_size, self.cfg.padded_vocab());
        if targets.len() != n || weights.len() != n {
            bail!("lm_loss: {} targets / {} weights for {n} positions", targets.len(), weights.len());
        }
        if let Some(&bad) = targets.iter().find(|&&x| x as usize >= v) {
            bail!("target id {bad} is outside the model's vocabulary ({v})");
        }
        self.logits(be, a);
        let tgt = be.upload_ids(targets)?;
        let w: Vec<B::F> = weights.iter().map(|&x| B::F::of(x as f64)).collect();
        let wbuf = be.upload(&w)?;
        be.crossentropy(&mut a.losses, &mut a.logits, &tgt, &wbuf, v, vp, inv_temp, grads.is_some());
        let losses = be.download(&a.losses);
        let total: f64 = losses.iter().zip(weights).map(|(l, &w)| l.f64() * w as f64).sum();
        if let Some(g) = grads {
            self.lm_head_backward(be, &mut a.dlnf, g.named_mut().wte, &a.logits, &a.lnf, n, false);
        }
        Ok(total)
    }

    /// Mean entropy of the (temperature-scaled) next-token distribution over the rows where `mask` [B*T] is 1.
    /// With `ent_coef` > 0 also backpropagates -ent_coef * (that mean), the entropy bonus, through the LM
    /// head: into `a.dlnf` (accumulated) and dwte. Call after `lm_loss` with gradients (which consumed the
    /// logits) and before `backward`.
    pub fn entropy_bonus(
        &self,
        be: &B,
        a: &mut Acts<B>,
        mask: &[f64],
        g: &mut Tensors<B>,
        inv_temp: f64,
        ent_coef: f64,
    ) -> Result<f64> {
        let (n, v, vp) = (a.b * a.t, self.cfg.vocab_size, self.cfg.padded_vocab());
        if mask.len() != n {
            bail!("entropy_bonus: a mask of {} for {n} positions", mask.len());
        }
        let count: f64 = mask.iter().sum();
        let coef = be.upload(&mask.iter().map(|m| B::F::of(-ent_coef * m / count)).collect::<Vec<_>>())?;
        self.logits(be, a);
        let want_grad = ent_coef > 0.0;
        let (mut ent, mut d) = (be.zeros_full(n)?, be.zeros_full(if want_grad { n * vp } else { 0 })?);
        be.entropy(&mut ent, &mut d, &a.logits, &coef, v, vp, inv_temp, want_grad)?;
        if want_grad {
            self.lm_head_backward(be, &mut a.dlnf, g.named_mut().wte, &d, &a.lnf, n, true);
        }
        let h = be.download(&ent);
        Ok(h.iter().zip(mask).map(|(h, m)| h.f64() * m).sum::<f64>() / count)
    }

    /// Backward of logits = h @ wte^T for dlogits [N,Vp]: dh = dlogits @ wte (added to `dh` when
    /// `accumulate`, else written), dwte += dlogits^T h.
    #[allow(clippy::too_many_arguments)]
    fn lm_head_backward(
        &self,
        be: &B,
        dh: &mut B::Buf,
        dwte: &mut B::Buf,
        dlogits: &B::Buf,
        h: &B::Buf,
        n: usize,
        accumulate: bool,
    ) {
        let (c, vp) = (self.cfg.n_embd, self.cfg.padded_vocab());
        be.matmul(dh, dlogits, self.params.named().wte, n, c, vp, false, false, accumulate);
        be.matmul(dwte, dlogits, h, vp, c, n, true, false, true);
    }

    /// Backward from `a.dlnf` (the gradient of the final hidden states) to every parameter, accumulating
    /// into `g`. Call after `forward` (without a KV cache) and after whatever filled `a.dlnf`.
    pub fn backward(&self, be: &B, a: &mut Acts<B>, g: &mut Tensors<B>) {
        let (b, t, c, nh) = (a.b, a.t, self.cfg.n_embd, self.cfg.n_head);
        let n = b * t;
        let last = self.cfg.n_layer - 1;
        let p = self.params.named();
        let mut g = g.named_mut();
        be.fill_zero(&mut a.dres);
        be.layernorm_backward(
            &mut a.dres,
            g.ln_f_w,
            g.ln_f_b,
            &a.dlnf,
            &a.layers[last].res3,
            p.ln_f_w,
            &a.lnf_mean,
            &a.lnf_rstd,
            c,
        );
        for l in (0..self.cfg.n_layer).rev() {
            let (done, rest) = a.layers.split_at(l);
            let x = if l == 0 { &a.encoded } else { &done[l - 1].res3 };
            let la = &rest[0];
            let (w, gw) = (&p.blocks[l], &mut g.blocks[l]);
            // x3 = x2 + mlp_proj(gelu(c_fc(ln_2(x2))))
            be.linear_backward(
                Some(&mut a.dfch_gelu),
                gw.mlp_proj_w,
                Some(&mut *gw.mlp_proj_b),
                &a.dres,
                &la.fch_gelu,
                w.mlp_proj_w,
                n,
                4 * c,
                c,
            );
            be.gelu_backward(&mut a.dfch, &la.fch, &a.dfch_gelu);
            be.linear_backward(
                Some(&mut a.dln),
                gw.c_fc_w,
                Some(&mut *gw.c_fc_b),
                &a.dfch,
                &la.ln2,
                w.c_fc_w,
                n,
                c,
                4 * c,
            );
            be.layernorm_backward(
                &mut a.dres,
                gw.ln_2_w,
                gw.ln_2_b,
                &a.dln,
                &la.res2,
                w.ln_2_w,
                &la.ln2_mean,
                &la.ln2_rstd,
                c,
            );
            // x2 = x + attn_proj(attention(c_attn(ln_1(x))))
            be.linear_backward(
                Some(&mut a.datty),
                gw.attn_proj_w,
                Some(&mut *gw.attn_proj_b),
                &a.dres,
                &la.atty,
                w.attn_proj_w,
                n,
                c,
                c,
            );
            be.attention_backward(&mut a.dqkv, &a.datty, &la.qkv, &la.atty, &la.lse, b, t, c, nh, nh);
            be.linear_backward(
                Some(&mut a.dln),
                gw.c_attn_w,
                Some(&mut *gw.c_attn_b),
                &a.dqkv,
                &la.ln1,
                w.c_attn_w,
                n,
                c,
                3 * c,
            );
            be.layernorm_backward(
                &mut a.dres,
                gw.ln_1_w,
                gw.ln_1_b,
                &a.dln,
                x,
                w.ln_1_w,
                &la.ln1_mean,
                &la.ln1_rstd,
                c,
            );
        }
        let tokens = a.tokens.as_ref().expect("backward before forward");
        be.encoder_backward(g.wte, g.wpe, &a.dres, tokens, &a.pos0, t, c);
    }
}

/// Download tensors in canonical order as host f32, wte unpadded.
pub fn tensors_to_host<B: Backend>(be: &B, cfg: &Config, t: &Tensors<B>) -> Vec<(ParamSpec, Vec<f32>)> {
    cfg.param_specs()
        .into_iter()
        .zip(&t.bufs)
        .map(|(spec, buf)| {
            let mut v: Vec<f32> = be.download(buf).iter().map(|&x| crate::ops::Float::f64(x) as f32).collect();
            v.truncate(spec.numel());
            (spec, v)
        })
        .collect()
}
