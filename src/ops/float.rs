//! The element type of the CPU reference: `f32` for the engine, `f64` for finite-difference checks.

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

pub trait Float:
    num_traits::Float
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Send
    + Sync
    + bytemuck::Pod
    + 'static
{
    fn of(x: f64) -> Self;
    fn f64(self) -> f64;
    /// e^x for the hot loops (softmax, cross-entropy, GELU): a branch-free polynomial that the compiler
    /// vectorises for f32 (relative error < 2e-7, like CUDA's `__expf`), the exact `exp` for f64.
    fn fast_exp(self) -> Self;
    const NAME: &'static str;
}

impl Float for f32 {
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn fast_exp(self) -> f32 {
        exp_f32(self)
    }
    const NAME: &'static str = "f32";
}

impl Float for f64 {
    fn of(x: f64) -> f64 {
        x
    }
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn fast_exp(self) -> f64 {
        self.exp()
    }
    const NAME: &'static str = "f64";
}

/// `x` as `f32` when `F` is `f32` (for the paths written for the engine's own type), else None.
pub fn as_f32<F: Float>(x: &[F]) -> Option<&[f32]> {
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()).then(|| bytemuck::cast_slice(x))
}

/// [`as_f32`] for a mutable slice.
pub fn as_f32_mut<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()).then(|| bytemuck::cast_slice_mut(x))
}

/// Sum with 16 independent accumulators (vectorisable; the same fixed order every time).
#[inline]
pub fn lanes_sum<F: Float>(x: &[F]) -> F {
    let mut acc = [F::zero(); 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().chain(tail).fold(F::zero(), |a, &b| a + b)
}

/// Maximum with 16 independent lanes (vectorisable). NaN inputs give an unspecified, possibly NaN result.
#[inline]
pub fn lanes_max<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter().chain(tail).fold(F::neg_infinity(), |a, &b| if b > a { b } else { a })
}

/// e^x = 2^k e^r with k = round(x / ln 2) and |r| <= ln(2)/2, e^r by its degree-7 Taylor polynomial
/// (truncation error r^8/8! < 2e-8 relative). Inputs are clamped to [-87.3, 88.3], the range where the
/// result is a normal f32 (below it the result is ~1e-38 instead of a denormal or 0, above it ~2e38 instead
/// of infinity: harmless for the softmax and sigmoid that use it). NaN propagates.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 split in two so that k * LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((k as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn fast_exp_matches_exp_to_f32_precision() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3;
            let exact = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2e-7, "max relative error {worst:e}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e4) < 1e-37 && exp_f32(1e4) > 1e38 && exp_f32(1e4).is_finite());
    }
}
