//! The decoder's operations: one file per op, each holding the math (forward and backward formula), the
//! shapes, and the CPU reference implementation, generic over `f32` (the engine) and `f64` (gradient
//! checks). The CUDA kernels in `kernels/*.cu` implement the same contracts and are tested against these.
//!
//! Conventions: tensors are row-major slices; `B` batch, `T` time, `C` channels, `NH` heads, `HS = C/NH`,
//! `V` vocabulary, `Vp` padded vocabulary, `F` MLP width (SwiGLU), `N = B*T` rows. A backward "+=" accumulates
//! into its output (parameter gradients, and the residual stream's gradient); "=" overwrites.
//!
//! Parallel loops split work into chunks of a fixed size, never by the number of threads, and reduce the
//! partial results in a fixed order: results are bit-identical whatever the thread count.

pub mod adamw;
pub mod attention;
pub mod crossentropy;
pub mod embedding;
pub mod entropy;
pub mod float;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
pub mod skinny_gemm;
pub mod swiglu;

pub use float::Float;

/// A raw pointer that may cross threads. Used where parallel tasks write disjoint, strided regions of one
/// buffer (e.g. the heads of a `[B, T, 3C]` gradient), which safe slices cannot express.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}
impl<T> SharedMut<T> {
    /// The pointer (a method, so closures capture the whole Send wrapper, not its field).
    pub fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Sum `f(chunk)` over fixed-size chunks of `0..n` in parallel, reducing in chunk order (deterministic).
pub(crate) fn par_chunked_sum<F: Float>(
    n: usize,
    chunk: usize,
    f: impl Fn(std::ops::Range<usize>) -> Vec<F> + Sync,
) -> Option<Vec<F>> {
    use rayon::prelude::*;
    let starts: Vec<usize> = (0..n).step_by(chunk.max(1)).collect();
    let partials: Vec<Vec<F>> = starts.par_iter().map(|&s| f(s..(s + chunk).min(n))).collect();
    let mut it = partials.into_iter();
    let mut acc = it.next()?;
    for p in it {
        for (a, b) in acc.iter_mut().zip(p) {
            *a += b;
        }
    }
    Some(acc)
}
