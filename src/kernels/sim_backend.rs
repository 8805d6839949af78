//! The engine's [`Backend`] run through the CUDA kernels in the simulator: every op goes through the launch
//! layer ([`super::launch`]) exactly as a GPU backend would call it, on host memory ([`SimBuf`]). Matrix
//! products, which the GPU does with cuBLASLt rather than a kernel of ours, use the CPU reference.
//! This is for tests: it lets the model code (forward, loss, backward, KV-cache sampling, AdamW) drive the
//! kernels end to end. It is slow by design (every CUDA thread is a fiber).

use super::launch::{self as kl, DType, DevPtr};
use super::sim::{SimBuf, SimLauncher};
use crate::backend::Backend;
use crate::ops;
use crate::ops::adamw::AdamWParams;
use anyhow::Result;

#[derive(Default)]
pub struct SimBackend {
    pub launcher: SimLauncher,
}

/// Token ids on the "device", with the host copy the embedding backward buckets by token.
pub struct SimIds {
    dev: SimBuf<u32>,
    host: Vec<u32>,
}

const DT: DType = DType::F32;

fn scratch(bytes: usize) -> SimBuf<u8> {
    SimBuf::zeros(bytes.max(1))
}

fn pos_dev(pos0: &[u32]) -> SimBuf<u32> {
    SimBuf::from_slice(pos0)
}

impl SimBackend {
    pub fn new() -> Self {
        Self::default()
    }
    fn l(&self) -> &SimLauncher {
        &self.launcher
    }
}

fn ok(r: Result<()>) {
    if let Err(e) = r {
        panic!("simulated kernel: {e:#}");
    }
}

fn p(b: &SimBuf<f32>) -> DevPtr {
    b.ptr()
}

impl Backend for SimBackend {
    type F = f32;
    type Buf = SimBuf<f32>;
    type Ids = SimIds;

    fn name(&self) -> String {
        "cuda-sim (CUDA kernels in the CPU simulator)".into()
    }
    fn zeros(&self, n: usize) -> Result<SimBuf<f32>> {
        Ok(SimBuf::zeros(n))
    }
    fn upload(&self, data: &[f32]) -> Result<SimBuf<f32>> {
        Ok(SimBuf::from_slice(data))
    }
    fn download(&self, buf: &SimBuf<f32>) -> Vec<f32> {
        buf.to_vec()
    }
    fn upload_ids(&self, ids: &[u32]) -> Result<SimIds> {
        Ok(SimIds { dev: SimBuf::from_slice(ids), host: ids.to_vec() })
    }
    fn len(&self, buf: &SimBuf<f32>) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut SimBuf<f32>) {
        buf.as_mut_slice().fill(0.0)
    }
    fn copy(&self, dst: &mut SimBuf<f32>, dst_off: usize, src: &SimBuf<f32>, src_off: usize, n: usize) {
        dst.as_mut_slice()[dst_off..dst_off + n].copy_from_slice(&src.as_slice()[src_off..src_off + n]);
    }

    fn encoder_forward(&self, out: &mut SimBuf<f32>, tokens: &SimIds, wte: &SimBuf<f32>, wpe: &SimBuf<f32>, pos0: &[u32], t: usize, c: usize) {
        let pd = pos_dev(pos0);
        ok(kl::encoder_forward(self.l(), DT, p(out), tokens.dev.ptr(), p(wte), p(wpe), pd.ptr(), pos0.len(), t, c));
    }
    fn encoder_backward(&self, dwte: &mut SimBuf<f32>, dwpe: &mut SimBuf<f32>, dout: &SimBuf<f32>, tokens: &SimIds, pos0: &[u32], t: usize, c: usize) {
        let n = pos0.len() * t;
        let plan = kl::EncoderPlan::new(&tokens.host[..n]);
        let plan_d = SimBuf::from_slice(&plan.data);
        let pd = pos_dev(pos0);
        ok(kl::encoder_backward(self.l(), DT, p(dwte), p(dwpe), p(dout), plan_d.ptr(), plan.buckets, pd.ptr(), pos0, t, c));
    }
    fn layernorm_forward(&self, out: &mut SimBuf<f32>, mean: &mut SimBuf<f32>, rstd: &mut SimBuf<f32>, inp: &SimBuf<f32>, w: &SimBuf<f32>, b: &SimBuf<f32>, c: usize) {
        let n = inp.len() / c;
        ok(kl::layernorm_forward(self.l(), DT, p(out), p(mean), p(rstd), p(inp), p(w), p(b), n, c));
    }
    fn layernorm_backward(&self, dinp: &mut SimBuf<f32>, dw: &mut SimBuf<f32>, db: &mut SimBuf<f32>, dout: &SimBuf<f32>, inp: &SimBuf<f32>, w: &SimBuf<f32>, mean: &SimBuf<f32>, rstd: &SimBuf<f32>, c: usize) {
        let n = inp.len() / c;
        let s = scratch(kl::layernorm_backward_scratch_bytes(n, c));
        ok(kl::layernorm_backward(self.l(), DT, p(dinp), p(dw), p(db), p(dout), p(inp), p(w), p(mean), p(rstd), n, c, s.ptr()));
    }
    fn matmul(&self, out: &mut SimBuf<f32>, a: &SimBuf<f32>, b: &SimBuf<f32>, m: usize, n: usize, k: usize, ta: bool, tb: bool, accumulate: bool) {
        ops::matmul::matmul(out.as_mut_slice(), a.as_slice(), b.as_slice(), m, n, k, ta, tb, accumulate)
    }
    fn bias_add(&self, out: &mut SimBuf<f32>, bias: &SimBuf<f32>) {
        let oc = bias.len();
        ok(kl::bias_add(self.l(), DT, p(out), p(bias), out.len() / oc, oc));
    }
    fn bias_backward(&self, dbias: &mut SimBuf<f32>, dout: &SimBuf<f32>) {
        let oc = dbias.len();
        let n = dout.len() / oc;
        let s = scratch(kl::bias_backward_scratch_bytes(n, oc));
        ok(kl::bias_backward(self.l(), DT, p(dbias), p(dout), n, oc, s.ptr()));
    }
    fn gelu_forward(&self, out: &mut SimBuf<f32>, inp: &SimBuf<f32>) {
        ok(kl::gelu_forward(self.l(), DT, p(out), p(inp), inp.len()));
    }
    fn gelu_backward(&self, dinp: &mut SimBuf<f32>, inp: &SimBuf<f32>, dout: &SimBuf<f32>) {
        ok(kl::gelu_backward(self.l(), DT, p(dinp), p(inp), p(dout), inp.len()));
    }
    fn add(&self, out: &mut SimBuf<f32>, a: &SimBuf<f32>, b: &SimBuf<f32>) {
        ok(kl::add(self.l(), DT, p(out), p(a), p(b), a.len()));
    }
    fn accumulate(&self, dst: &mut SimBuf<f32>, src: &SimBuf<f32>) {
        ok(kl::accumulate(self.l(), DT, p(dst), p(src), src.len()));
    }
    fn scale(&self, buf: &mut SimBuf<f32>, s: f64) {
        ok(kl::scale(self.l(), DT, p(buf), s as f32, buf.len()));
    }
    fn attention_forward(&self, out: &mut SimBuf<f32>, lse: &mut SimBuf<f32>, q_src: &SimBuf<f32>, kv: &SimBuf<f32>, pos0: &[u32], b: usize, tq: usize, tk: usize, c: usize, nh: usize) {
        let pd = pos_dev(pos0);
        ok(kl::attention_forward(self.l(), DT, p(out), p(lse), p(q_src), p(kv), pd.ptr(), b, tq, tk, c, nh));
    }
    fn attention_backward(&self, dqkv: &mut SimBuf<f32>, dout: &SimBuf<f32>, qkv: &SimBuf<f32>, out: &SimBuf<f32>, lse: &SimBuf<f32>, b: usize, t: usize, c: usize, nh: usize) {
        let s = scratch(kl::attention_backward_scratch_bytes(b, t, nh));
        ok(kl::attention_backward(self.l(), DT, p(dqkv), p(dout), p(qkv), p(out), p(lse), b, t, c, nh, s.ptr()));
    }
    fn crossentropy(&self, losses: &mut SimBuf<f32>, logits: &mut SimBuf<f32>, targets: &SimIds, weights: &SimBuf<f32>, v: usize, vp: usize, inv_temp: f64, want_grad: bool) {
        ok(kl::crossentropy(self.l(), DT, p(losses), p(logits), targets.dev.ptr(), p(weights), losses.len(), v, vp, inv_temp as f32, want_grad));
    }
    fn adamw(&self, param: &mut SimBuf<f32>, grad: &SimBuf<f32>, m: &mut SimBuf<f32>, v: &mut SimBuf<f32>, h: &AdamWParams) {
        ok(kl::adamw(self.l(), DT, p(param), 0, p(grad), p(m), p(v), param.len(), h));
    }
    fn sum_squares(&self, buf: &SimBuf<f32>) -> f64 {
        let s = SimBuf::<f64>::zeros(kl::sum_squares_scratch_bytes(buf.len()) / 8);
        ok(kl::sum_squares(self.l(), DT, p(buf), buf.len(), s.ptr()));
        s.as_slice()[0]
    }
}
