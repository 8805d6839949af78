//! The decoder over any [`Backend`], whichever its family: parameters, activations, the KV cache, the LM
//! head and its loss. The blocks themselves are the family's: [`super::gpt2`] (LayerNorm, GELU, learned
//! positions) or [`super::llama`] (RMSNorm, SwiGLU, RoPE, grouped-query attention); [`Decoder::forward`] and
//! [`Decoder::backward`] hand over to them.
//!
//! For tokens [B,T] every family computes x0 = embed(tokens), L blocks of two residual branches
//! (attention, then MLP), h = final_norm(x), logits = h @ W_head^T with W_head = the embedding (tied) or a
//! tensor of its own. The forward keeps every activation the backward needs (llm.c style: one named buffer
//! each); the backward walks the same list in reverse, each line the backward of one forward line.

use super::{gpt2, llama, Config, ParamSpec};
use crate::backend::Backend;
use crate::ops::rope::Rope;
use crate::ops::Float;
use crate::util::rng::Rng;
use anyhow::{bail, Result};

/// A list of tensors in the canonical order of `Config::param_specs`: the parameters, their gradients, or
/// optimizer moments, stored flat (multi-tensor ops such as AdamW walk the list) and addressed by name
/// through the family's `named` / `named_mut`. The embedding (and an untied LM head) is held padded to
/// [Vp, C] on the device (zero rows past V) so logits rows are Vp wide.
pub struct Tensors<B: Backend> {
    pub bufs: Vec<B::Buf>,
}

impl<B: Backend> Tensors<B> {
    pub fn zeros(be: &B, cfg: &Config) -> Result<Self> {
        let bufs = device_shapes(cfg).iter().map(|&n| be.zeros(n)).collect::<Result<_>>()?;
        Ok(Tensors { bufs })
    }
    /// In full precision ([`Backend::zeros_full`]): AdamW's moments, which the update keeps in f32.
    pub fn zeros_full(be: &B, cfg: &Config) -> Result<Self> {
        let bufs = device_shapes(cfg).iter().map(|&n| be.zeros_full(n)).collect::<Result<_>>()?;
        Ok(Tensors { bufs })
    }
    pub fn fill_zero(&mut self, be: &B) {
        self.bufs.iter_mut().for_each(|b| be.fill_zero(b));
    }
}

/// Whether tensor `i` of the canonical list is held padded to Vp rows: the embedding (first) and an untied
/// LM head (last).
fn padded(cfg: &Config, i: usize) -> bool {
    i == 0 || i == cfg.lm_head_index()
}

/// Element counts of the device tensors (the vocabulary-sized ones padded to Vp rows).
fn device_shapes(cfg: &Config) -> Vec<usize> {
    let vp = cfg.padded_vocab();
    cfg.param_specs()
        .iter()
        .enumerate()
        .map(|(i, s)| if padded(cfg, i) { vp * cfg.n_embd } else { s.numel() })
        .collect()
}

pub struct Decoder<B: Backend> {
    pub cfg: Config,
    pub params: Tensors<B>,
    /// The rotary table of a Llama-family model (none for GPT-2).
    pub(super) rope: Option<Rope>,
}

/// One block's saved activations. The names are the roles; which op fills each is the family's (a GPT-2
/// block's norms are LayerNorms with a mean, a Llama block's RMSNorms without one: `norm1_mean` empty).
pub(super) struct LayerActs<B: Backend> {
    pub norm1: B::Buf,      // [B,T,C]
    pub norm1_mean: B::Buf, // [B,T] (LayerNorm) or empty
    pub norm1_rstd: B::Buf, // [B,T]
    pub qkv: B::Buf,        // [B,T,W]  W = (NH + 2 NKV) HS (after RoPE for the Llama family)
    pub atty: B::Buf,       // [B,T,C]
    pub lse: B::Buf,        // [B,NH,T]
    pub res2: B::Buf,       // [B,T,C]  x after the attention residual
    pub norm2: B::Buf,
    pub norm2_mean: B::Buf,
    pub norm2_rstd: B::Buf,
    pub fc: B::Buf,     // [B,T,H1] the MLP's first projection (4C; SwiGLU's [gate | up]: 2F)
    pub fc_act: B::Buf, // [B,T,H2] its activation (4C; F)
    pub res3: B::Buf,   // [B,T,C]  the block's output
}

/// Activations and gradient scratch for a batch of shape [B,T].
pub struct Acts<B: Backend> {
    pub b: usize,
    pub t: usize,
    pub(super) tokens: Option<B::Ids>,
    pub(super) pos0: Vec<u32>,
    pub(super) encoded: B::Buf,
    pub(super) layers: Vec<LayerActs<B>>,
    /// Final hidden states h = final_norm(x) [B,T,C]: what the reward and value heads read.
    pub lnf: B::Buf,
    pub(super) lnf_mean: B::Buf,
    pub(super) lnf_rstd: B::Buf,
    /// Logits [B,T,Vp]; after `lm_loss` with a gradient, dL/dlogits.
    pub logits: B::Buf,
    /// Per-token -log p(target) [B,T] from the last `lm_loss`.
    pub losses: B::Buf,
    pub(super) scratch: B::Buf, // [B,T,C]
    /// Made by [`Acts::new`] (every block kept, logits, gradient scratch), not [`Acts::for_inference`].
    pub(super) train: bool,
    // gradient scratch
    /// Gradient of the final hidden states [B,T,C]; heads add into it before `backward`.
    pub dlnf: B::Buf,
    pub(super) dres: B::Buf,
    pub(super) dnorm: B::Buf,
    pub(super) datty: B::Buf,
    pub(super) dqkv: B::Buf,
    pub(super) dfc: B::Buf,
    pub(super) dfc_act: B::Buf,
}

impl<B: Backend> Acts<B> {
    /// Activations for training: every block's kept for the backward, the logits and the gradient scratch.
    pub fn new(be: &B, cfg: &Config, b: usize, t: usize) -> Result<Self> {
        Self::alloc(be, cfg, b, t, cfg.n_layer, true)
    }

    /// Activations for a forward alone (sampling): no logits, no gradient scratch, and three blocks' buffers
    /// used in turn (block l in set l mod 3: a block reads only its predecessor's output and writes its
    /// successor's first norm), so a prefill of a large batch holds 3 blocks' activations, not n_layer.
    pub fn for_inference(be: &B, cfg: &Config, b: usize, t: usize) -> Result<Self> {
        Self::alloc(be, cfg, b, t, cfg.n_layer.min(3), false)
    }

    fn alloc(be: &B, cfg: &Config, b: usize, t: usize, sets: usize, train: bool) -> Result<Self> {
        if t > cfg.n_positions {
            bail!("sequence length {t} exceeds the model's context n_positions = {}", cfg.n_positions);
        }
        let (c, n, w, (h1, h2)) = (cfg.n_embd, b * t, cfg.qkv_width(), cfg.mlp_widths());
        let mean = if cfg.llama().is_some() { 0 } else { n };
        let z = |k: usize| be.zeros(k);
        // Training-only buffers: empty for a forward alone.
        let g = |k: usize| be.zeros(if train { k } else { 0 });
        let layers = (0..sets)
            .map(|_| {
                Ok(LayerActs {
                    norm1: z(n * c)?,
                    norm1_mean: z(mean)?,
                    norm1_rstd: z(n)?,
                    qkv: z(n * w)?,
                    atty: z(n * c)?,
                    lse: z(b * cfg.n_head * t)?,
                    res2: z(n * c)?,
                    norm2: z(n * c)?,
                    norm2_mean: z(mean)?,
                    norm2_rstd: z(n)?,
                    fc: z(n * h1)?,
                    fc_act: z(n * h2)?,
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
            lnf_mean: z(mean)?,
            lnf_rstd: z(n)?,
            logits: be.zeros_full(if train { n * cfg.padded_vocab() } else { 0 })?,
            losses: z(n)?,
            scratch: z(n * c)?,
            train,
            dlnf: g(n * c)?,
            dres: g(n * c)?,
            dnorm: g(n * c)?,
            datty: g(n * c)?,
            dqkv: g(n * w)?,
            dfc: g(n * h1)?,
            dfc_act: g(n * h2)?,
        })
    }

    /// Block l's activations with its input (the embedding output for block 0, else block l-1's output) and
    /// the next block's activations (None after the last); `layers` holds every block's or sets used in turn.
    pub(super) fn block<'a>(
        layers: &'a mut [LayerActs<B>],
        encoded: &'a B::Buf,
        l: usize,
        n_layer: usize,
    ) -> (&'a B::Buf, &'a mut LayerActs<B>, Option<&'a mut LayerActs<B>>) {
        let k = layers.len();
        let (prev, cur, next) = ((l + k - 1) % k, l % k, (l + 1) % k);
        let distinct = "a block's activation sets are distinct (3 or n_layer of them)";
        match (l > 0, l + 1 < n_layer) {
            (false, false) => (encoded, &mut layers[cur], None),
            (false, true) => {
                let [c, n] = layers.get_disjoint_mut([cur, next]).expect(distinct);
                (encoded, c, Some(n))
            }
            (true, false) => {
                let [p, c] = layers.get_disjoint_mut([prev, cur]).expect(distinct);
                (&p.res3, c, None)
            }
            (true, true) => {
                let [p, c, n] = layers.get_disjoint_mut([prev, cur, next]).expect(distinct);
                (&p.res3, c, Some(n))
            }
        }
    }
}

impl<B: Backend> Acts<B> {
    /// Elements held (activations and gradient scratch; the logits in the backend's full precision): what
    /// a batch costs beyond the parameters.
    pub fn numel(&self, be: &B) -> usize {
        let layer = |l: &LayerActs<B>| {
            [
                &l.norm1,
                &l.norm1_mean,
                &l.norm1_rstd,
                &l.qkv,
                &l.atty,
                &l.lse,
                &l.res2,
                &l.norm2,
                &l.norm2_mean,
                &l.norm2_rstd,
                &l.fc,
                &l.fc_act,
                &l.res3,
            ]
            .iter()
            .map(|x| be.len(x))
            .sum::<usize>()
        };
        let rest = [
            &self.encoded,
            &self.lnf,
            &self.lnf_mean,
            &self.lnf_rstd,
            &self.logits,
            &self.losses,
            &self.scratch,
            &self.dlnf,
            &self.dres,
            &self.dnorm,
            &self.datty,
            &self.dqkv,
            &self.dfc,
            &self.dfc_act,
        ];
        self.layers.iter().map(layer).sum::<usize>() + rest.iter().map(|x| be.len(x)).sum::<usize>()
    }
}

/// Keys and values of every block for incremental decoding: per block a [B, maxT, W] buffer holding the
/// qkv rows of every position seen so far (the q heads are unused; the layout matches the training qkv, so
/// one attention op serves both; the k heads are stored rotated, as attention reads them).
pub struct KvCache<B: Backend> {
    pub b: usize,
    pub capacity: usize,
    pub(super) layers: Vec<B::Buf>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(be: &B, cfg: &Config, b: usize, capacity: usize) -> Result<Self> {
        if capacity > cfg.n_positions {
            bail!("KV cache length {capacity} exceeds the model's context n_positions = {}", cfg.n_positions);
        }
        let layers = (0..cfg.n_layer).map(|_| be.zeros(b * capacity * cfg.qkv_width())).collect::<Result<_>>()?;
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

    /// The row moves that append `t` new qkv rows per batch row (of a [B*T, W] buffer) to the cache at
    /// positions pos0[b].. (one `copy_rows` per layer).
    pub(super) fn append_rows(&self, pos0: &[u32], t: usize) -> Vec<(u32, u32)> {
        (0..self.b)
            .flat_map(|bi| (0..t).map(move |j| (bi, j)))
            .map(|(bi, j)| ((bi * self.capacity + pos0[bi] as usize + j) as u32, (bi * t + j) as u32))
            .collect()
    }
}

impl<B: Backend> Decoder<B> {
    /// Random initialisation: weights N(0, 0.02), biases 0, norm gains 1; GPT-2 scales its residual
    /// projections (attn.c_proj, mlp.c_proj) to N(0, 0.02/sqrt(2 L)); the Llama family (Hugging Face's
    /// `initializer_range` 0.02) does not.
    pub fn init(be: &B, cfg: Config, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let mut rng = Rng::new(seed);
        let resid_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        let host: Vec<Vec<f32>> = cfg
            .param_specs()
            .iter()
            .map(|s| {
                let n = s.numel();
                if s.shape.len() == 1 {
                    vec![if s.name.ends_with("bias") { 0.0 } else { 1.0 }; n]
                } else {
                    let gpt2_resid = cfg.llama().is_none() && s.name.ends_with("c_proj.weight");
                    let std = if gpt2_resid { resid_std } else { 0.02 };
                    (0..n).map(|_| (rng.normal() * std) as f32).collect()
                }
            })
            .collect();
        Self::from_host(be, cfg, &host)
    }

    /// Build from host tensors in the canonical order and shapes of `cfg.param_specs()` (unpadded).
    pub fn from_host(be: &B, cfg: Config, tensors: &[Vec<f32>]) -> Result<Self> {
        cfg.validate()?;
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
            if padded(&cfg, i) {
                v.resize(cfg.padded_vocab() * cfg.n_embd, <B::F as num_traits::Zero>::zero());
            }
            bufs.push(be.upload(&v)?);
        }
        let rope = cfg.llama().map(|s| Rope::new(s.rope_theta, cfg.head_size(), s.rope_scaling));
        Ok(Decoder { cfg, params: Tensors { bufs }, rope })
    }

    /// The parameters as host f32 tensors in canonical order and shapes (unpadded).
    pub fn to_host(&self, be: &B) -> Vec<(ParamSpec, Vec<f32>)> {
        tensors_to_host(be, &self.cfg, &self.params)
    }

    /// The same model with its vocabulary grown to `vocab` tokens (e.g. the base tokenizer + the chat
    /// tokens): the new embedding (and untied LM head) rows start as the mean of the existing ones, so new
    /// tokens begin as an "average" token.
    pub fn grow_vocab(&self, be: &B, vocab: usize) -> Result<Self> {
        let old = self.cfg.vocab_size;
        if vocab < old {
            bail!("cannot shrink the vocabulary from {old} to {vocab} tokens");
        }
        let c = self.cfg.n_embd;
        let mut host: Vec<Vec<f32>> = self.to_host(be).into_iter().map(|(_, v)| v).collect();
        for i in [0, self.cfg.lm_head_index()] {
            let table = &mut host[i];
            if table.len() > old * c {
                continue; // tied: the embedding is the head, already grown
            }
            let mean: Vec<f32> =
                (0..c).map(|k| (0..old).map(|r| table[r * c + k] as f64).sum::<f64>() as f32 / old as f32).collect();
            for _ in old..vocab {
                table.extend_from_slice(&mean);
            }
        }
        Self::from_host(be, Config { vocab_size: vocab, ..self.cfg }, &host)
    }

    /// The LM head's weight [Vp, C]: the embedding when tied.
    pub(super) fn lm_head(&self) -> &B::Buf {
        &self.params.bufs[self.cfg.lm_head_index()]
    }

    /// Forward through the final norm for tokens [B,T] (row b starting at absolute position pos0[b];
    /// None = 0). With a KV cache, each block appends its keys/values at pos0[b].. and attends to the cache.
    pub fn forward(
        &self,
        be: &B,
        a: &mut Acts<B>,
        tokens: &[u32],
        pos0: Option<&[u32]>,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<()> {
        let (b, t) = (a.b, a.t);
        if tokens.len() != b * t {
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
        a.tokens = Some(be.upload_ids(tokens)?);
        match &self.rope {
            None => gpt2::forward(be, &self.cfg, &self.params, a, cache),
            Some(rope) => llama::forward(be, &self.cfg, rope, &self.params, a, tokens, cache),
        }
        Ok(())
    }

    /// Backward from `a.dlnf` (the gradient of the final hidden states) to every parameter, accumulating
    /// into `g`. Call after `forward` (without a KV cache) and after whatever filled `a.dlnf`.
    pub fn backward(&self, be: &B, a: &mut Acts<B>, g: &mut Tensors<B>) {
        assert!(a.train, "backward needs the activations of Acts::new, not Acts::for_inference");
        match &self.rope {
            None => gpt2::backward(be, &self.cfg, &self.params, a, g),
            Some(rope) => llama::backward(be, &self.cfg, rope, &self.params, a, g),
        }
    }

    /// logits [B,T,Vp] = h @ W_head^T.
    pub fn logits(&self, be: &B, a: &mut Acts<B>) {
        assert!(a.train, "the logits of every position need Acts::new (Acts::for_inference holds none)");
        let (n, c, vp) = (a.b * a.t, self.cfg.n_embd, self.cfg.padded_vocab());
        be.matmul(&mut a.logits, &a.lnf, self.lm_head(), n, vp, c, false, true, false);
    }

    /// LM head + fused cross-entropy: per-token losses -log p(target) (temperature-scaled by `inv_temp`),
    /// and returns L = sum_i weights[i] * losses[i]. With `grads`, also backpropagates L through the head:
    /// dW_head += dlogits^T h and `a.dlnf` = dlogits @ W_head (overwritten).
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
            self.lm_head_backward(be, &mut a.dlnf, g, &a.logits, &a.lnf, n, false);
        }
        Ok(total)
    }

    /// Mean entropy of the (temperature-scaled) next-token distribution over the rows where `mask` [B*T] is 1.
    /// With `ent_coef` > 0 also backpropagates -ent_coef * (that mean), the entropy bonus, through the LM
    /// head: into `a.dlnf` (accumulated) and dW_head. Call after `lm_loss` with gradients (which consumed
    /// the logits) and before `backward`.
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
            self.lm_head_backward(be, &mut a.dlnf, g, &d, &a.lnf, n, true);
        }
        let h = be.download(&ent);
        Ok(h.iter().zip(mask).map(|(h, m)| h.f64() * m).sum::<f64>() / count)
    }

    /// Backward of logits = h @ W_head^T for dlogits [N,Vp]: dh = dlogits @ W_head (added to `dh` when
    /// `accumulate`, else written), dW_head += dlogits^T h.
    #[allow(clippy::too_many_arguments)]
    fn lm_head_backward(
        &self,
        be: &B,
        dh: &mut B::Buf,
        g: &mut Tensors<B>,
        dlogits: &B::Buf,
        h: &B::Buf,
        n: usize,
        accumulate: bool,
    ) {
        let (c, vp) = (self.cfg.n_embd, self.cfg.padded_vocab());
        be.matmul(dh, dlogits, self.lm_head(), n, c, vp, false, false, accumulate);
        be.matmul(&mut g.bufs[self.cfg.lm_head_index()], dlogits, h, vp, c, n, true, false, true);
    }
}

/// Download tensors in canonical order as host f32, unpadded.
pub fn tensors_to_host<B: Backend>(be: &B, cfg: &Config, t: &Tensors<B>) -> Vec<(ParamSpec, Vec<f32>)> {
    cfg.param_specs()
        .into_iter()
        .zip(&t.bufs)
        .map(|(spec, buf)| {
            let mut v: Vec<f32> = be.download(buf).iter().map(|&x| x.f64() as f32).collect();
            v.truncate(spec.numel());
            (spec, v)
        })
        .collect()
}
