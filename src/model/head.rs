//! A scalar head on the decoder's final hidden states: the reward model's and the value model's output.
//!
//! Forward:  r[i] = h[i,:] . w + b          for each selected row i of h [N,C] (every token for a value
//!                                            head; the answer's last token for a reward model)
//! Backward: dh[i,:] += dr[i] * w;   dw += sum_i dr[i] h[i,:];   db += sum_i dr[i]
//! Init (InstructGPT / lm-human-preferences): w ~ N(0, 1/sqrt(C+1)), b = 0.

use crate::backend::Backend;
use crate::ops::Float;
use crate::util::rng::Rng;
use anyhow::{bail, Result};

pub struct ScalarHead<B: Backend> {
    /// [C, 1] (a column, so the forward is one matmul).
    pub w: B::Buf,
    /// [1]
    pub b: B::Buf,
}

/// Gradients of a head (same shapes).
pub struct HeadGrads<B: Backend> {
    pub w: B::Buf,
    pub b: B::Buf,
}

impl<B: Backend> ScalarHead<B> {
    pub fn init(be: &B, c: usize, seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let std = 1.0 / ((c + 1) as f64).sqrt();
        let w: Vec<B::F> = (0..c).map(|_| B::F::of(rng.normal() * std)).collect();
        Ok(ScalarHead { w: be.upload(&w)?, b: be.zeros(1)? })
    }

    pub fn from_host(be: &B, w: &[f32], b: f32) -> Result<Self> {
        let w: Vec<B::F> = w.iter().map(|&x| B::F::of(x as f64)).collect();
        Ok(ScalarHead { w: be.upload(&w)?, b: be.upload(&[B::F::of(b as f64)])? })
    }

    /// (w, b) as host f32.
    pub fn to_host(&self, be: &B) -> (Vec<f32>, f32) {
        let w = be.download(&self.w).iter().map(|x| x.f64() as f32).collect();
        (w, be.download(&self.b)[0].f64() as f32)
    }

    pub fn zero_grads(&self, be: &B) -> Result<HeadGrads<B>> {
        Ok(HeadGrads { w: be.zeros(be.len(&self.w))?, b: be.zeros(1)? })
    }

    /// r[i] = h[i,:] . w + b for every row of h [N,C]; a reward model then reads the rows it needs
    /// (each answer's last token), a value head uses them all.
    pub fn forward(&self, be: &B, h: &B::Buf, c: usize) -> Result<Vec<f64>> {
        let n = be.len(h) / c;
        let mut out = be.zeros_full(n)?; // scores are not rounded to a narrower compute type
        be.matmul(&mut out, h, &self.w, n, 1, c, false, false, false);
        let b = be.download(&self.b)[0].f64();
        Ok(be.download(&out).iter().map(|x| x.f64() + b).collect())
    }

    /// Backward for upstream gradients `dr` [N] (zero on rows that were not used): accumulates
    /// dh [N,C] += dr w^T, dw += h^T dr, db += sum(dr).
    pub fn backward(
        &self,
        be: &B,
        g: &mut HeadGrads<B>,
        dh: &mut B::Buf,
        h: &B::Buf,
        dr: &[f64],
        c: usize,
    ) -> Result<()> {
        let n = be.len(h) / c;
        if dr.len() != n {
            bail!("head backward: {} gradients for {n} rows", dr.len());
        }
        let drb = be.upload(&dr.iter().map(|&x| B::F::of(x)).collect::<Vec<_>>())?;
        be.matmul(&mut g.w, h, &drb, c, 1, n, true, false, true);
        let db = be.upload(&[B::F::of(dr.iter().sum())])?;
        be.accumulate(&mut g.b, &db);
        let mut dhs = be.zeros(n * c)?;
        be.matmul(&mut dhs, &drb, &self.w, n, c, 1, false, true, false);
        be.accumulate(dh, &dhs);
        Ok(())
    }
}
