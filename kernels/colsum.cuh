// Deterministic column sums over rows (no float atomics): the bias gradient, layernorm's dw/db, rmsnorm's dw.
// Stage 1 (colsum_partial): grid (ceil(C/COLSUM_COLS), R), block (COLSUM_COLS, COLSUM_LANES) = (32, 8) (from
//   geometry.cuh). Block (bx, r) sums rows of chunk r (rows r*rows_per .. min(N, (r+1)*rows_per)) for columns
//   bx*32 .. bx*32+31 and writes partial[k][r][c] for each of its K (1 or 2) quantities, reducing its
//   COLSUM_LANES row-lanes in a fixed order.
// Stage 2 (colsum_finalize_*, in linear.cu): thread per column sums the R partials in order and adds to dst.
// The column guard of the row loop (`c < C`) only saves work: the store is guarded too, so `c <= C` there is
// an equivalent mutant (kernels/mutants-allowed.txt).
#pragma once
#include "common.cuh"
#include "geometry.cuh"

// Per element: K=1 -> dout (bias), or dout * inp * rstd given inp (rmsnorm dw); K=2 -> (dout * xhat, dout) (layernorm).
template <class T, int K>
__device__ void colsum_partial(float* __restrict__ partial, const T* __restrict__ dout, const T* __restrict__ inp,
                               const float* __restrict__ mean, const float* __restrict__ rstd, int N, int C,
                               int rows_per) {
  __shared__ float red[K][COLSUM_LANES][COLSUM_COLS + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int c = blockIdx.x * COLSUM_COLS + tx;
  const int r = blockIdx.y, R = gridDim.y;
  const int n0 = r * rows_per, n1 = min(N, n0 + rows_per);
  float acc0 = 0.f, acc1 = 0.f;
  if (c < C) {
    for (int n = n0 + ty; n < n1; n += COLSUM_LANES) {
      float g = to_f32(dout[(long long)n * C + c]);
      if (K == 2) {
        float xhat = (to_f32(inp[(long long)n * C + c]) - mean[n]) * rstd[n];
        acc0 += g * xhat;
        acc1 += g;
      } else {
        acc0 += inp ? g * to_f32(inp[(long long)n * C + c]) * rstd[n] : g;
      }
    }
  }
  red[0][ty][tx] = acc0;
  if (K == 2) red[K - 1][ty][tx] = acc1;
  __syncthreads();
  if (ty == 0 && c < C) {
    float s0 = 0.f, s1 = 0.f;
    for (int y = 0; y < COLSUM_LANES; y++) {
      s0 += red[0][y][tx];
      if (K == 2) s1 += red[K - 1][y][tx];
    }
    partial[(long long)r * C + c] = s0;
    if (K == 2) partial[((long long)R + r) * C + c] = s1;
  }
}
