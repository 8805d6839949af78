//! The Llama-family block (Llama, Qwen2, Mistral; pre-norm) over any [`Backend`], for tokens [B,T]:
//!   x0 = embed_tokens[tokens]                                  (no position table: positions enter by RoPE)
//!   per block l:  x = x + o_proj(attention(rope(qkv_proj(rmsnorm(x)))))
//!                 x = x + down_proj(swiglu(gate_up_proj(rmsnorm(x))))
//!   h = rmsnorm(x)
//! with qkv_proj [C, W], W = (NH + 2 NKV) HS (grouped-query attention: query head h reads kv head
//! h / (NH/NKV)), biased in Qwen2 only; gate_up_proj [C, 2F] = [gate | up], swiglu = silu(gate) * up
//! (Touvron et al. 2023; Hugging Face's `LlamaDecoderLayer`). RoPE rotates the q and k heads in place, so the
//! saved qkv (and the KV cache) hold them rotated, as attention reads them; its backward rotates dq, dk back.
//! The shared parts (parameters, activations, the cache, the LM head) are in [`super::decoder`].

use super::decoder::{Acts, KvCache, Tensors};
use super::Config;
use crate::backend::Backend;
use crate::ops::rope::Rope;

/// The model's tensors by name (`T` is `&Buf` or `&mut Buf`), in the order of `Config::param_specs` (an
/// untied LM head, last, is the decoder's: `Decoder::lm_head`).
pub(super) struct Named<T> {
    pub embed: T, // [Vp, C]
    pub blocks: Vec<Block<T>>,
    pub norm: T, // [C]
}

/// One block's tensors by name (linear weights [in, out]).
pub(super) struct Block<T> {
    pub input_norm: T,    // [C]
    pub qkv_w: T,         // [C, W]
    pub qkv_b: Option<T>, // [W] (Qwen2)
    pub o_w: T,           // [C, C]
    pub post_norm: T,     // [C]
    pub gate_up_w: T,     // [C, 2F]
    pub down_w: T,        // [F, C]
}

/// Name the tensors of a canonical list: the one place that knows its order (`Config::param_specs`).
pub(super) fn name_list<T>(mut it: impl Iterator<Item = T>, cfg: &Config) -> Named<T> {
    let s = cfg.llama().expect("a Llama-family config");
    let mut next = || it.next().expect("a tensor list in the canonical order");
    let embed = next();
    let blocks = (0..cfg.n_layer)
        .map(|_| Block {
            input_norm: next(),
            qkv_w: next(),
            qkv_b: s.qkv_bias.then(&mut next),
            o_w: next(),
            post_norm: next(),
            gate_up_w: next(),
            down_w: next(),
        })
        .collect();
    let norm = next();
    Named { embed, blocks, norm }
}

/// The blocks' forward through the final norm; `a.tokens` and `a.pos0` are set.
pub(super) fn forward<B: Backend>(
    be: &B,
    cfg: &Config,
    rope: &Rope,
    params: &Tensors<B>,
    a: &mut Acts<B>,
    tokens: &[u32],
    mut cache: Option<&mut KvCache<B>>,
) {
    let (b, t, c, nh, nkv, w) = (a.b, a.t, cfg.n_embd, cfg.n_head, cfg.n_kv_head(), cfg.qkv_width());
    let ((f2, f), eps, n) = (cfg.mlp_widths(), cfg.llama().expect("Llama family").rms_norm_eps, b * t);
    let append = cache.as_ref().map_or(vec![], |kv| kv.append_rows(&a.pos0, t));
    let p = name_list(params.bufs.iter(), cfg);
    // x0 = embed_tokens[tokens]: a row gather.
    let rows: Vec<(u32, u32)> = tokens.iter().enumerate().map(|(i, &tok)| (i as u32, tok)).collect();
    be.copy_rows(&mut a.encoded, p.embed, c, &rows);
    for l in 0..cfg.n_layer {
        let (x, la, _) = Acts::block(&mut a.layers, &a.encoded, l, cfg.n_layer);
        let wl = &p.blocks[l];
        // x2 = x + o_proj(attention(rope(qkv_proj(rmsnorm(x)))))
        be.rmsnorm_forward(&mut la.norm1, &mut la.norm1_rstd, x, wl.input_norm, c, eps);
        be.linear_forward(&mut la.qkv, &la.norm1, wl.qkv_w, wl.qkv_b, n, c, w);
        be.rope_forward(&mut la.qkv, rope, &a.pos0, b, t, nh, nkv);
        match cache.as_deref_mut() {
            Some(kv) => {
                be.copy_rows(&mut kv.layers[l], &la.qkv, w, &append);
                let (kvl, cap) = (&kv.layers[l], kv.capacity);
                be.attention_forward(&mut la.atty, &mut la.lse, &la.qkv, kvl, &a.pos0, b, t, cap, c, nh, nkv);
            }
            None => be.attention_forward(&mut la.atty, &mut la.lse, &la.qkv, &la.qkv, &a.pos0, b, t, t, c, nh, nkv),
        }
        be.linear_forward(&mut a.scratch, &la.atty, wl.o_w, None, n, c, c);
        be.add(&mut la.res2, x, &a.scratch);
        // x3 = x2 + down_proj(swiglu(gate_up_proj(rmsnorm(x2))))
        be.rmsnorm_forward(&mut la.norm2, &mut la.norm2_rstd, &la.res2, wl.post_norm, c, eps);
        be.linear_forward(&mut la.fc, &la.norm2, wl.gate_up_w, None, n, c, f2);
        be.swiglu_forward(&mut la.fc_act, &la.fc, f);
        be.linear_forward(&mut a.scratch, &la.fc_act, wl.down_w, None, n, f, c);
        be.add(&mut la.res3, &la.res2, &a.scratch);
    }
    let last = &a.layers[(cfg.n_layer - 1) % a.layers.len()].res3; // the last block's output (a set in turn)
    be.rmsnorm_forward(&mut a.lnf, &mut a.lnf_rstd, last, p.norm, c, eps);
}

/// The blocks' backward from `a.dlnf`, accumulating into `g`: the forward's lines in reverse.
pub(super) fn backward<B: Backend>(
    be: &B,
    cfg: &Config,
    rope: &Rope,
    params: &Tensors<B>,
    a: &mut Acts<B>,
    g: &mut Tensors<B>,
) {
    let (b, t, c, nh, nkv, w) = (a.b, a.t, cfg.n_embd, cfg.n_head, cfg.n_kv_head(), cfg.qkv_width());
    let ((f2, f), n) = (cfg.mlp_widths(), b * t);
    let p = name_list(params.bufs.iter(), cfg);
    let mut g = name_list(g.bufs.iter_mut(), cfg);
    be.fill_zero(&mut a.dres);
    let last = &a.layers[cfg.n_layer - 1].res3;
    be.rmsnorm_backward(&mut a.dres, g.norm, &a.dlnf, last, p.norm, &a.lnf_rstd, c);
    for l in (0..cfg.n_layer).rev() {
        let (done, rest) = a.layers.split_at(l);
        let x = if l == 0 { &a.encoded } else { &done[l - 1].res3 };
        let (la, wl, gl) = (&rest[0], &p.blocks[l], &mut g.blocks[l]);
        // x3 = x2 + down_proj(swiglu(gate_up_proj(rmsnorm(x2))))
        be.linear_backward(Some(&mut a.dfc_act), gl.down_w, None, &a.dres, &la.fc_act, wl.down_w, n, f, c);
        be.swiglu_backward(&mut a.dfc, &a.dfc_act, &la.fc, f);
        be.linear_backward(Some(&mut a.dnorm), gl.gate_up_w, None, &a.dfc, &la.norm2, wl.gate_up_w, n, c, f2);
        be.rmsnorm_backward(&mut a.dres, gl.post_norm, &a.dnorm, &la.res2, wl.post_norm, &la.norm2_rstd, c);
        // x2 = x + o_proj(attention(rope(qkv_proj(rmsnorm(x)))))
        be.linear_backward(Some(&mut a.datty), gl.o_w, None, &a.dres, &la.atty, wl.o_w, n, c, c);
        be.attention_backward(&mut a.dqkv, &a.datty, &la.qkv, &la.atty, &la.lse, b, t, c, nh, nkv);
        be.rope_backward(&mut a.dqkv, rope, &a.pos0, b, t, nh, nkv);
        let qkv_b = gl.qkv_b.as_deref_mut();
        be.linear_backward(Some(&mut a.dnorm), gl.qkv_w, qkv_b, &a.dqkv, &la.norm1, wl.qkv_w, n, c, w);
        be.rmsnorm_backward(&mut a.dres, gl.input_norm, &a.dnorm, x, wl.input_norm, &la.norm1_rstd, c);
    }
    let tokens = a.tokens.as_ref().expect("backward before forward");
    be.encoder_backward(g.embed, None, &a.dres, tokens, &a.pos0, t, c);
}
