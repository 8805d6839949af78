//! The GPT-2 block (pre-norm) over any [`Backend`], for tokens [B,T]:
//!   x0 = wte[tokens] + wpe[pos]
//!   per block l:  x = x + attn_proj(attention(c_attn(ln_1(x))));   x = x + mlp_proj(gelu(c_fc(ln_2(x))))
//!   h = ln_f(x)
//! (each residual add is computed together with the layernorm that reads it: `residual_layernorm_forward`).
//! The shared parts (parameters, activations, the cache, the tied LM head) are in [`super::decoder`].

use super::decoder::{Acts, KvCache, Tensors};
use super::Config;
use crate::backend::Backend;

/// The model's tensors by name (`T` is `&Buf` or `&mut Buf`), shapes as GPT-2 stores them.
pub(super) struct Named<T> {
    pub wte: T, // [Vp, C] (V rows used)
    pub wpe: T, // [maxT, C]
    pub blocks: Vec<Block<T>>,
    pub ln_f_w: T, // [C]
    pub ln_f_b: T, // [C]
}

/// One block's tensors by name.
pub(super) struct Block<T> {
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
pub(super) fn name_list<T>(mut it: impl Iterator<Item = T>, n_layer: usize) -> Named<T> {
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

/// The blocks' forward through ln_f; `a.tokens` and `a.pos0` are set.
pub(super) fn forward<B: Backend>(
    be: &B,
    cfg: &Config,
    params: &Tensors<B>,
    a: &mut Acts<B>,
    mut cache: Option<&mut KvCache<B>>,
) {
    let (b, t, c, nh) = (a.b, a.t, cfg.n_embd, cfg.n_head);
    let n = b * t;
    // With a cache, row bi's qkv rows go to positions pos0[bi].. of its cache row (one copy per layer).
    let append = cache.as_ref().map_or(vec![], |kv| kv.append_rows(&a.pos0, t));
    let p = name_list(params.bufs.iter(), cfg.n_layer);
    let ids = a.tokens.as_ref().expect("forward sets the tokens");
    be.encoder_forward(&mut a.encoded, ids, p.wte, p.wpe, &a.pos0, t, c);
    // Each block's closing residual add is fused with the layernorm that reads it: ln_2 inside the
    // block, then ln_1 of the next block (ln_f after the last).
    {
        let l0 = &mut a.layers[0];
        be.layernorm_forward(
            &mut l0.norm1,
            &mut l0.norm1_mean,
            &mut l0.norm1_rstd,
            &a.encoded,
            p.blocks[0].ln_1_w,
            p.blocks[0].ln_1_b,
            c,
        );
    }
    for l in 0..cfg.n_layer {
        let (x, la, next) = Acts::block(&mut a.layers, &a.encoded, l, cfg.n_layer);
        let w = &p.blocks[l];
        be.linear_forward(&mut la.qkv, &la.norm1, w.c_attn_w, Some(w.c_attn_b), n, c, 3 * c);
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
            &mut la.norm2,
            &mut la.norm2_mean,
            &mut la.norm2_rstd,
            x,
            &a.scratch,
            w.ln_2_w,
            w.ln_2_b,
            c,
        );
        be.linear_forward(&mut la.fc, &la.norm2, w.c_fc_w, Some(w.c_fc_b), n, c, 4 * c);
        be.gelu_forward(&mut la.fc_act, &la.fc);
        be.linear_forward(&mut a.scratch, &la.fc_act, w.mlp_proj_w, Some(w.mlp_proj_b), n, 4 * c, c);
        match next {
            Some(nl) => {
                let (w, bias) = (p.blocks[l + 1].ln_1_w, p.blocks[l + 1].ln_1_b);
                be.residual_layernorm_forward(
                    &mut la.res3,
                    &mut nl.norm1,
                    &mut nl.norm1_mean,
                    &mut nl.norm1_rstd,
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
}

/// The blocks' backward from `a.dlnf`, accumulating into `g`.
pub(super) fn backward<B: Backend>(be: &B, cfg: &Config, params: &Tensors<B>, a: &mut Acts<B>, g: &mut Tensors<B>) {
    let (b, t, c, nh) = (a.b, a.t, cfg.n_embd, cfg.n_head);
    let n = b * t;
    let last = cfg.n_layer - 1;
    let p = name_list(params.bufs.iter(), cfg.n_layer);
    let mut g = name_list(g.bufs.iter_mut(), cfg.n_layer);
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
    for l in (0..cfg.n_layer).rev() {
        let (done, rest) = a.layers.split_at(l);
        let x = if l == 0 { &a.encoded } else { &done[l - 1].res3 };
        let la = &rest[0];
        let (w, gw) = (&p.blocks[l], &mut g.blocks[l]);
        // x3 = x2 + mlp_proj(gelu(c_fc(ln_2(x2))))
        be.linear_backward(
            Some(&mut a.dfc_act),
            gw.mlp_proj_w,
            Some(&mut *gw.mlp_proj_b),
            &a.dres,
            &la.fc_act,
            w.mlp_proj_w,
            n,
            4 * c,
            c,
        );
        be.gelu_backward(&mut a.dfc, &la.fc, &a.dfc_act);
        be.linear_backward(
            Some(&mut a.dnorm),
            gw.c_fc_w,
            Some(&mut *gw.c_fc_b),
            &a.dfc,
            &la.norm2,
            w.c_fc_w,
            n,
            c,
            4 * c,
        );
        be.layernorm_backward(
            &mut a.dres,
            gw.ln_2_w,
            gw.ln_2_b,
            &a.dnorm,
            &la.res2,
            w.ln_2_w,
            &la.norm2_mean,
            &la.norm2_rstd,
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
            Some(&mut a.dnorm),
            gw.c_attn_w,
            Some(&mut *gw.c_attn_b),
            &a.dqkv,
            &la.norm1,
            w.c_attn_w,
            n,
            c,
            3 * c,
        );
        be.layernorm_backward(
            &mut a.dres,
            gw.ln_1_w,
            gw.ln_1_b,
            &a.dnorm,
            x,
            w.ln_1_w,
            &la.norm1_mean,
            &la.norm1_rstd,
            c,
        );
    }
    let tokens = a.tokens.as_ref().expect("backward before forward");
    be.encoder_backward(g.wte, Some(g.wpe), &a.dres, tokens, &a.pos0, t, c);
}
