// LayerNorm over the last dimension, fp32 statistics whatever the storage type.
// Forward:  mean = sum(x)/C;  var = sum((x-mean)^2)/C (biased);  rstd = 1/sqrt(var + 1e-5)
//           out = (x - mean) * rstd * w + b;   mean[N], rstd[N] are f32 (may be null when not needed).
// Backward: xhat = (x - mean) * rstd,  g = dout * w
//           dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))             (layernorm_backward_dinp)
//           dw += sum_n dout * xhat;  db += sum_n dout     (colsum partials, then colsum_finalize in linear.cu)
// Fused residual + layernorm forward: residual = a + b (stored, rounded to T), then out = layernorm(residual)
//           with the statistics of the stored residual (same result as add followed by layernorm_forward).
// Shapes: inp/out/dout/dinp [N,C]; w, b, dw, db [C]. One warp per row, 8 rows per 256-thread block; rows of
// 16-byte packs when C allows (pointers 16-byte aligned, as the launch layer's buffers are).
#include "colsum.cuh"

// Row access: lane l of a row's warp takes the chunks l, l+32, ... of W consecutive elements (Chunk in
// common.cuh). W = the 16-byte pack when C is a multiple of it (every GPT-2 width), else 1; the entry points
// pick W from C, and each kernel is written once for both.
template <class T, int W>
__device__ void layernorm_forward(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                  const T* __restrict__ inp, const T* __restrict__ w, const T* __restrict__ b, int N,
                                  int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T* x = inp + (long long)row * C;
  T* o = out + (long long)row * C;
  float s = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(x + c);
#pragma unroll
    for (int k = 0; k < W; k++) s += to_f32(xc.v[k]);
  }
  const float m = warp_sum(s) / C;
  float v = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(x + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float d = to_f32(xc.v[k]) - m;
      v += d * d;
    }
  }
  const float rs = rsqrtf(warp_sum(v) / C + 1e-5f);
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(x + c), wc = load_chunk<T, W>(w + c), bc = load_chunk<T, W>(b + c);
    Chunk<T, W> oc;
#pragma unroll
    for (int k = 0; k < W; k++) oc.v[k] = from_f32<T>((to_f32(xc.v[k]) - m) * rs * to_f32(wc.v[k]) + to_f32(bc.v[k]));
    store_chunk<T, W>(o + c, oc);
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = rs;
  }
}

template <class T, int W>
__device__ void residual_layernorm_forward(T* __restrict__ residual, T* __restrict__ out, float* __restrict__ mean,
                                           float* __restrict__ rstd, const T* __restrict__ a, const T* __restrict__ b,
                                           const T* __restrict__ w, const T* __restrict__ bias, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  T* r = residual + off;
  float s = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> ac = load_chunk<T, W>(a + off + c), bc = load_chunk<T, W>(b + off + c);
    Chunk<T, W> rc;
#pragma unroll
    for (int k = 0; k < W; k++) {
      rc.v[k] = from_f32<T>(to_f32(ac.v[k]) + to_f32(bc.v[k]));
      s += to_f32(rc.v[k]);
    }
    store_chunk<T, W>(r + c, rc);
  }
  const float m = warp_sum(s) / C;
  float v = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {  // each lane re-reads only what it wrote itself
    const Chunk<T, W> rc = load_chunk<T, W>(r + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float d = to_f32(rc.v[k]) - m;
      v += d * d;
    }
  }
  const float rs = rsqrtf(warp_sum(v) / C + 1e-5f);
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> rc = load_chunk<T, W>(r + c), wc = load_chunk<T, W>(w + c), bc = load_chunk<T, W>(bias + c);
    Chunk<T, W> oc;
#pragma unroll
    for (int k = 0; k < W; k++) oc.v[k] = from_f32<T>((to_f32(rc.v[k]) - m) * rs * to_f32(wc.v[k]) + to_f32(bc.v[k]));
    store_chunk<T, W>(out + off + c, oc);
  }
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = rs;
  }
}

template <class T, int W>
__device__ void layernorm_backward_dinp(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp,
                                        const T* __restrict__ w, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  const float m = mean[row], rs = rstd[row];
  float sg = 0.f, sgx = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> dc = load_chunk<T, W>(dout + off + c), xc = load_chunk<T, W>(inp + off + c), wc = load_chunk<T, W>(w + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float g = to_f32(dc.v[k]) * to_f32(wc.v[k]);
      sg += g;
      sgx += g * (to_f32(xc.v[k]) - m) * rs;
    }
  }
  sg = warp_sum(sg) / C;
  sgx = warp_sum(sgx) / C;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> dc = load_chunk<T, W>(dout + off + c), xc = load_chunk<T, W>(inp + off + c), wc = load_chunk<T, W>(w + c);
    Chunk<T, W> gc = load_chunk<T, W>(dinp + off + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float g = to_f32(dc.v[k]) * to_f32(wc.v[k]);
      const float xh = (to_f32(xc.v[k]) - m) * rs;
      gc.v[k] = from_f32<T>(to_f32(gc.v[k]) + rs * (g - sg - xh * sgx));
    }
    store_chunk<T, W>(dinp + off + c, gc);
  }
}

#define LAYERNORM_INSTANTIATE(T, sfx)                                                                         \
  extern "C" __global__ void layernorm_forward_##sfx(T* __restrict__ out, float* __restrict__ mean,            \
                                                     float* __restrict__ rstd, const T* __restrict__ inp,      \
                                                     const T* __restrict__ w, const T* __restrict__ b, int N,  \
                                                     int C) {                                                  \
    RLHF_CHUNK_DISPATCH(T, C, (layernorm_forward<T, W>(out, mean, rstd, inp, w, b, N, C)))                             \
  }                                                                                                           \
  RLHF_EXPORT(layernorm_forward_##sfx)                                                                        \
  extern "C" __global__ void residual_layernorm_forward_##sfx(                                                \
      T* __restrict__ residual, T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,      \
      const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ w, const T* __restrict__ bias,   \
      int N, int C) {                                                                                         \
    RLHF_CHUNK_DISPATCH(T, C, (residual_layernorm_forward<T, W>(residual, out, mean, rstd, a, b, w, bias, N, C)))      \
  }                                                                                                           \
  RLHF_EXPORT(residual_layernorm_forward_##sfx)                                                               \
  extern "C" __global__ void layernorm_backward_dinp_##sfx(T* __restrict__ dinp, const T* __restrict__ dout,  \
                                                           const T* __restrict__ inp, const T* __restrict__ w, \
                                                           const float* __restrict__ mean,                    \
                                                           const float* __restrict__ rstd, int N, int C) {    \
    RLHF_CHUNK_DISPATCH(T, C, (layernorm_backward_dinp<T, W>(dinp, dout, inp, w, mean, rstd, N, C)))                  \
  }                                                                                                           \
  RLHF_EXPORT(layernorm_backward_dinp_##sfx)                                                                  \
  extern "C" __global__ void layernorm_backward_partial_##sfx(float* __restrict__ partial,                    \
                                                              const T* __restrict__ dout,                     \
                                                              const T* __restrict__ inp,                      \
                                                              const float* __restrict__ mean,                 \
                                                              const float* __restrict__ rstd, int N, int C,   \
                                                              int rows_per) {                                 \
    colsum_partial<T, 2>(partial, dout, inp, mean, rstd, N, C, rows_per);                                    \
  }                                                                                                           \
  RLHF_EXPORT(layernorm_backward_partial_##sfx)

LAYERNORM_INSTANTIATE(float, f32)
LAYERNORM_INSTANTIATE(bf16, bf16)
