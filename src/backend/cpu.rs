//! The CPU backend: host vectors and the reference ops of `crate::ops`, multi-threaded with rayon.
//! `Cpu<f32>` is the engine's CPU device; `Cpu<f64>` runs the same model code for gradient checks.

use super::Backend;
use crate::ops::{self, adamw::AdamWParams, rope::Rope, sample::Sampling, Float};
use anyhow::Result;
use rayon::prelude::*;
use std::marker::PhantomData;

#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu<F: Float>(PhantomData<F>);

impl<F: Float> Cpu<F> {
    pub fn new() -> Self {
        Cpu(PhantomData)
    }
}

impl<F: Float> Backend for Cpu<F> {
    type F = F;
    type Buf = Vec<F>;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({}, {} threads)", F::NAME, rayon::current_num_threads())
    }

    fn zeros(&self, n: usize) -> Result<Vec<F>> {
        Ok(vec![F::zero(); n])
    }
    fn upload(&self, data: &[F]) -> Result<Vec<F>> {
        Ok(data.to_vec())
    }
    fn download(&self, buf: &Vec<F>) -> Vec<F> {
        buf.clone()
    }
    fn upload_ids(&self, ids: &[u32]) -> Result<Vec<u32>> {
        Ok(ids.to_vec())
    }
    fn len(&self, buf: &Vec<F>) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut Vec<F>) {
        buf.iter_mut().for_each(|x| *x = F::zero());
    }
    fn copy(&self, dst: &mut Vec<F>, dst_off: usize, src: &Vec<F>, src_off: usize, n: usize) {
        dst[dst_off..dst_off + n].copy_from_slice(&src[src_off..src_off + n]);
    }

    fn encoder_forward(
        &self,
        out: &mut Vec<F>,
        tokens: &Vec<u32>,
        wte: &Vec<F>,
        wpe: &Vec<F>,
        pos0: &[u32],
        t: usize,
        c: usize,
    ) {
        ops::embedding::forward(out, tokens, wte, wpe, pos0, t, c)
    }
    fn encoder_backward(
        &self,
        dwte: &mut Vec<F>,
        dwpe: Option<&mut Vec<F>>,
        dout: &Vec<F>,
        tokens: &Vec<u32>,
        pos0: &[u32],
        t: usize,
        c: usize,
    ) {
        ops::embedding::backward(dwte, dwpe.map(|d| d.as_mut_slice()), dout, tokens, pos0, t, c)
    }
    fn layernorm_forward(
        &self,
        out: &mut Vec<F>,
        mean: &mut Vec<F>,
        rstd: &mut Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        b: &Vec<F>,
        c: usize,
    ) {
        ops::layernorm::forward(out, mean, rstd, inp, w, b, c)
    }
    fn layernorm_backward(
        &self,
        dinp: &mut Vec<F>,
        dw: &mut Vec<F>,
        db: &mut Vec<F>,
        dout: &Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        mean: &Vec<F>,
        rstd: &Vec<F>,
        c: usize,
    ) {
        ops::layernorm::backward(dinp, dw, db, dout, inp, w, mean, rstd, c)
    }
    fn rmsnorm_forward(&self, out: &mut Vec<F>, rstd: &mut Vec<F>, inp: &Vec<F>, w: &Vec<F>, c: usize, eps: f64) {
        ops::rmsnorm::forward(out, rstd, inp, w, c, eps)
    }
    fn rmsnorm_backward(
        &self,
        dinp: &mut Vec<F>,
        dw: &mut Vec<F>,
        dout: &Vec<F>,
        inp: &Vec<F>,
        w: &Vec<F>,
        rstd: &Vec<F>,
        c: usize,
    ) {
        ops::rmsnorm::backward(dinp, dw, dout, inp, w, rstd, c)
    }
    fn matmul(
        &self,
        out: &mut Vec<F>,
        a: &Vec<F>,
        b: &Vec<F>,
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        tb: bool,
        accumulate: bool,
    ) {
        ops::matmul::matmul(out, a, b, m, n, k, ta, tb, accumulate)
    }
    fn bias_add(&self, out: &mut Vec<F>, bias: &Vec<F>) {
        ops::linear::bias_add(out, bias)
    }
    fn bias_backward(&self, dbias: &mut Vec<F>, dout: &Vec<F>) {
        ops::linear::bias_backward(dbias, dout)
    }
    fn gelu_forward(&self, out: &mut Vec<F>, inp: &Vec<F>) {
        ops::gelu::forward(out, inp)
    }
    fn gelu_backward(&self, dinp: &mut Vec<F>, inp: &Vec<F>, dout: &Vec<F>) {
        ops::gelu::backward(dinp, inp, dout)
    }
    fn swiglu_forward(&self, out: &mut Vec<F>, inp: &Vec<F>, f: usize) {
        ops::swiglu::forward(out, inp, f)
    }
    fn swiglu_backward(&self, dinp: &mut Vec<F>, dout: &Vec<F>, inp: &Vec<F>, f: usize) {
        ops::swiglu::backward(dinp, dout, inp, f)
    }
    fn add(&self, out: &mut Vec<F>, a: &Vec<F>, b: &Vec<F>) {
        ops::residual::add(out, a, b)
    }
    fn accumulate(&self, dst: &mut Vec<F>, src: &Vec<F>) {
        ops::residual::accumulate(dst, src)
    }
    fn scale(&self, buf: &mut Vec<F>, s: f64) {
        ops::residual::scale(buf, F::of(s))
    }
    fn rope_forward(&self, qkv: &mut Vec<F>, rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize) {
        ops::rope::forward(qkv, rope, pos0, b, t, nh, nkv)
    }
    fn rope_backward(&self, dqkv: &mut Vec<F>, rope: &Rope, pos0: &[u32], b: usize, t: usize, nh: usize, nkv: usize) {
        ops::rope::backward(dqkv, rope, pos0, b, t, nh, nkv)
    }
    fn attention_forward(
        &self,
        out: &mut Vec<F>,
        lse: &mut Vec<F>,
        q_src: &Vec<F>,
        kv: &Vec<F>,
        pos0: &[u32],
        b: usize,
        tq: usize,
        tk: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        ops::attention::forward(out, lse, q_src, kv, pos0, b, tq, tk, c, nh, nkv)
    }
    fn attention_backward(
        &self,
        dqkv: &mut Vec<F>,
        dout: &Vec<F>,
        qkv: &Vec<F>,
        out: &Vec<F>,
        lse: &Vec<F>,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
        nkv: usize,
    ) {
        ops::attention::backward(dqkv, dout, qkv, out, lse, b, t, c, nh, nkv)
    }
    fn crossentropy(
        &self,
        losses: &mut Vec<F>,
        logits: &mut Vec<F>,
        targets: &Vec<u32>,
        weights: &Vec<F>,
        v: usize,
        vp: usize,
        inv_temp: f64,
        want_grad: bool,
    ) {
        ops::crossentropy::forward_backward(losses, logits, targets, weights, v, vp, F::of(inv_temp), want_grad)
    }
    fn adamw(&self, param: &mut Vec<F>, grad: &Vec<F>, m: &mut Vec<F>, v: &mut Vec<F>, h: &AdamWParams) {
        ops::adamw::step(param, grad, m, v, h)
    }
    fn sum_squares(&self, buf: &Vec<F>) -> f64 {
        ops::adamw::sum_squares(buf)
    }
    /// The rows in parallel (each is a pass of exp over the vocabulary), read where they lie.
    fn sample(&self, logits: &Vec<F>, v: usize, vp: usize, s: &Sampling, u: &[f64]) -> Result<Vec<(u32, f32)>> {
        u.par_iter().enumerate().map(|(i, &u)| ops::sample::pick(&logits[i * vp..i * vp + v], s, u)).collect()
    }
}

/// Keep large allocations in the heap instead of fresh `mmap`s: the GEMM library allocates its packing
/// buffers per call, and with glibc's default threshold every call would map, zero-fault and unmap
/// megabytes (measured: ~15% of a GPT-2 step in page clearing and TLB shootdowns).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
