//! General matrix product through the `gemm` crate (blocked, SIMD, multi-threaded); in f32 with few rows
//! (a decode step) and AVX2, through [`super::skinny_gemm`], which reads the weights without packing them.
//!
//! out[M,N] (+)= op(a) @ op(b), where op(a) is [M,K] (a stored [M,K], or [K,M] when `ta`) and op(b) is
//! [K,N] (b stored [K,N], or [N,K] when `tb`). Transposes cost nothing: they are strides.
//! Backward of out = a @ b:  da = dout @ b^T,  db = a^T @ dout.

use super::Float;

#[allow(clippy::too_many_arguments)]
pub fn matmul<F: Float>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    accumulate: bool,
) {
    assert!(
        out.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matmul: buffers too small for [{m},{k}]x[{k},{n}]"
    );
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    if super::skinny_gemm::takes(m, ta) {
        if let (Some(o), Some(a), Some(b)) =
            (super::float::as_f32_mut(out), super::float::as_f32(a), super::float::as_f32(b))
        {
            return super::skinny_gemm::matmul(o, a, b, m, n, k, tb, accumulate);
        }
    }
    // Row and column strides of op(a) and op(b).
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let threads = rayon::current_num_threads();
    let par = if m * n * k < 32 * 32 * 32 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };
    // SAFETY: the strides above address only within the asserted buffer sizes.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            F::one(),
            F::one(),
            false,
            false,
            false,
            par,
        );
    }
}
