//! The backend interface: the one seam between the model code (written once, in `crate::model`) and the
//! hardware. A backend owns its buffers (host memory for the CPU, device memory for CUDA) and implements
//! each op of `crate::ops` on them. Shapes and formulas of every op are documented in `crate::ops::*`.
//!
//! Ops are infallible at this level: a failure inside a device op is a bug or a dead device, reported by a
//! panic with the backend's message (as `cudaCheck` does in C); allocation and transfers return errors.

pub mod cpu;

use crate::ops::adamw::AdamWParams;
use crate::ops::rope::Rope;
use crate::ops::sample::Sampling;
use crate::ops::Float;
use anyhow::Result;

pub use cpu::Cpu;

pub trait Backend: Sync {
    /// Element type the host sees (uploads, downloads).
    type F: Float;
    /// A buffer of `F` on the device.
    type Buf: Send + Sync;
    /// A buffer of token ids (u32) on the device.
    type Ids: Send + Sync;

    fn name(&self) -> String;

    // ---- memory ----
    fn zeros(&self, n: usize) -> Result<Self::Buf>;
    /// A zeroed buffer in full precision (the host element type) where the compute type may be narrower:
    /// for values a narrow type would distort, such as logits (GPT-2's reach |100|, where a bf16 step is
    /// 0.5) and scalar scores.
    fn zeros_full(&self, n: usize) -> Result<Self::Buf> {
        self.zeros(n)
    }
    /// The compute type's unit roundoff (2^-24 for f32, 2^-8 for bf16): the scale of the differences two
    /// mathematically equal computations may show, for checks that compare them.
    fn roundoff(&self) -> f64 {
        <Self::F as num_traits::Float>::epsilon().f64() / 2.0
    }
    fn upload(&self, data: &[Self::F]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Vec<Self::F>;
    fn upload_ids(&self, ids: &[u32]) -> Result<Self::Ids>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn fill_zero(&self, buf: &mut Self::Buf);
    /// dst[dst_off..dst_off+n] = src[src_off..src_off+n]
    fn copy(&self, dst: &mut Self::Buf, dst_off: usize, src: &Self::Buf, src_off: usize, n: usize);

    // ---- ops (see crate::ops::<name> for math and shapes) ----
    #[allow(clippy::too_many_arguments)]
    fn encoder_forward(
        &self,
        out: &mut Self::Buf,
        tokens: &Self::Ids,
        wte: &Self::Buf,
        wpe: &Self::Buf,
        pos0: &[u32],
        t: usize,
        c: usize,
    );
    /// dwte += scatter of dout by token; dwpe (None: a model without a position table) += dout by position.
    #[allow(clippy::too_many_arguments)]
    fn encoder_backward(
        &self,
        dwte: &mut Self::Buf,
        dwpe: Option<&mut Self::Buf>,
        dout: &Self::Buf,
        tokens: &Self::Ids,
        pos0: &[u32],
        t: usize,
        c: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        c: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        c: usize,
    );
    /// out[N,C] = rmsnorm(inp) * w, rstd [N] (statistics: f32 on the kernel backend); eps is the model's
    /// `rms_norm_eps` (see crate::ops::rmsnorm).
    fn rmsnorm_forward(
        &self,
        out: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        c: usize,
        eps: f64,
    );
    /// dinp[N,C] += ..., dw[C] += ... from dout[N,C], the forward's inp, w and rstd.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dinp: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        c: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        out: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        accumulate: bool,
    );
    fn bias_add(&self, out: &mut Self::Buf, bias: &Self::Buf);
    fn bias_backward(&self, dbias: &mut Self::Buf, dout: &Self::Buf);
    fn gelu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf);
    fn gelu_backward(&self, dinp: &mut Self::Buf, inp: &Self::Buf, dout: &Self::Buf);
    /// out[N,F] = silu(gate) * up of the packed inp [N,2F] = [gate | up] (see crate::ops::swiglu).
    fn swiglu_forward(&self, out: &mut Self::Buf, inp: &Self::Buf, f: usize);
    /// dinp[N,2F] = [dgate | dup] (overwrites) from dout [N,F] and the forward's inp.
    fn swiglu_backward(&self, dinp: &mut Self::Buf, dout: &Self::Buf, inp: &Self::Buf, f: usize);
    fn add(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf);
    fn accumulate(&self, dst: &mut Self::Buf, src: &Self::Buf);
    fn scale(&self, buf: &mut Self::Buf, s: f64);
    /// RoPE, in place on the q and k heads of qkv [B,T,(NH+2NKV)HS] at positions pos0[b] + t (see
    /// crate::ops::rope; HS = the table's head size).
    #[allow(clippy::too_many_arguments)]
    fn rope_forward(&self, qkv: &mut Self::Buf, rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize);
    /// The transposed rotation, in place on the q and k heads of dqkv (same shapes and positions).
    #[allow(clippy::too_many_arguments)]
    fn rope_backward(&self, dqkv: &mut Self::Buf, rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize);
    /// Causal attention of NH query heads over NKV key/value heads (NKV = NH: GPT-2): out [B,Tq,C],
    /// lse [B,NH,Tq], q_src [B,Tq,W], kv [B,Tk,W] with W = C + 2 NKV C/NH (see crate::ops::attention).
    #[allow(clippy::too_many_arguments)]
    fn attention_forward(
        &self,
        out: &mut Self::Buf,
        lse: &mut Self::Buf,
        q_src: &Self::Buf,
        kv: &Self::Buf,
        pos0: &[u32],
        b: usize,
        tq: usize,
        tk: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    );
    /// The training-form backward (pos0 = 0, kv = qkv): dqkv [B,T,W] (overwritten) from dout, out [B,T,C].
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        qkv: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    );
    #[allow(clippy::too_many_arguments)]
    fn crossentropy(
        &self,
        losses: &mut Self::Buf,
        logits: &mut Self::Buf,
        targets: &Self::Ids,
        weights: &Self::Buf,
        v: usize,
        vp: usize,
        inv_temp: f64,
        want_grad: bool,
    );
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, h: &AdamWParams);
    /// One AdamW step over a whole parameter list, `hs[i]` for tensor i: the default steps each tensor; a
    /// device backend does them all in one launch.
    fn adamw_all(
        &self,
        params: &mut [Self::Buf],
        grads: &[Self::Buf],
        m: &mut [Self::Buf],
        v: &mut [Self::Buf],
        hs: &[AdamWParams],
    ) {
        for (i, h) in hs.iter().enumerate() {
            self.adamw(&mut params[i], &grads[i], &mut m[i], &mut v[i], h);
        }
    }
    fn sum_squares(&self, buf: &Self::Buf) -> f64;
    /// The sum of `sum_squares` over `bufs` (the global gradient norm squared); a device backend batches
    /// the reductions so the host waits once.
    fn sum_squares_all(&self, bufs: &[Self::Buf]) -> f64 {
        bufs.iter().map(|b| self.sum_squares(b)).sum()
    }

    // ---- composed ops: defaults a backend may replace with fused versions ----

    /// Per-row entropy of softmax(inv_temp * logits) and, with `want_grad`, coef-weighted dH/dlogits
    /// (see crate::ops::entropy). The default runs the host reference through download/upload (the CPU
    /// engine's own path); the kernel backend has a kernel for it.
    #[allow(clippy::too_many_arguments)]
    fn entropy(
        &self,
        ent: &mut Self::Buf,
        dlogits: &mut Self::Buf,
        logits: &Self::Buf,
        coef: &Self::Buf,
        v: usize,
        vp: usize,
        inv_temp: f64,
        want_grad: bool,
    ) -> Result<()> {
        let (l, c) = (self.download(logits), self.download(coef));
        let (mut e, mut d) = (
            vec![<Self::F as num_traits::Zero>::zero(); c.len()],
            vec![<Self::F as num_traits::Zero>::zero(); l.len()],
        );
        crate::ops::entropy::forward_backward(
            &mut e,
            &mut d,
            &l,
            &c,
            v,
            vp,
            <Self::F as Float>::of(inv_temp),
            want_grad,
        );
        *ent = self.upload(&e)?;
        if want_grad {
            *dlogits = self.upload(&d)?;
        }
        Ok(())
    }

    /// residual = a + b, then out = layernorm(residual) * w + bias with mean, rstd of the residual: the
    /// default composes `add` and `layernorm_forward`; a device backend fuses them into one pass.
    #[allow(clippy::too_many_arguments)]
    fn residual_layernorm_forward(
        &self,
        residual: &mut Self::Buf,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        a: &Self::Buf,
        b: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        c: usize,
    ) {
        self.add(residual, a, b);
        self.layernorm_forward(out, mean, rstd, residual, w, bias, c);
    }

    /// out[N,OC] = inp[N,C] @ w[C,OC] + bias  (see crate::ops::linear)
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        self.matmul(out, inp, w, n, oc, c, false, false, false);
        if let Some(bias) = bias {
            self.bias_add(out, bias);
        }
    }

    /// dinp = dout @ w^T (overwrites; skipped when None); dw += inp^T @ dout; dbias += colsum(dout)
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        dinp: Option<&mut Self::Buf>,
        dw: &mut Self::Buf,
        dbias: Option<&mut Self::Buf>,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        n: usize,
        c: usize,
        oc: usize,
    ) {
        if let Some(dinp) = dinp {
            self.matmul(dinp, dout, w, n, c, oc, false, true, false);
        }
        self.matmul(dw, inp, dout, c, oc, n, true, false, true);
        if let Some(dbias) = dbias {
            self.bias_backward(dbias, dout);
        }
    }

    /// Row gather/scatter: for each (d, s) of `rows`, dst[d*w .. d*w+w] = src[s*w .. s*w+w] (rows of `w`
    /// elements; the destination rows distinct, `dst` and `src` different buffers). The KV-cache append, the
    /// gather of the rows whose logits are needed and the compaction of a cache to its live rows. The default
    /// copies row by row; a device backend does all the rows in one launch.
    fn copy_rows(&self, dst: &mut Self::Buf, src: &Self::Buf, w: usize, rows: &[(u32, u32)]) {
        for &(d, s) in rows {
            self.copy(dst, d as usize * w, src, s as usize * w, w);
        }
    }

    /// One token per row of `logits` [rows, vp] (the first `v` columns are the vocabulary), row i drawn with
    /// the uniform number `u[i]` (rows = u.len(); unused when greedy): each row's id and temperature-scaled
    /// log-probability, as `crate::ops::sample::pick` chooses them; a non-finite logit is an error naming
    /// the token. The CPU runs that reference on each row, the kernel backend samples on the device, and only
    /// the ids and log-probs cross to the host.
    fn sample(&self, logits: &Self::Buf, v: usize, vp: usize, s: &Sampling, u: &[f64]) -> Result<Vec<(u32, f32)>>;
}
