// LayerNorm over the last dimension, fp32 statistics whatever the storage type.
// Forward:  mean = sum(x)/C;  var = sum((x-mean)^2)/C (biased);  rstd = 1/sqrt(var + 1e-5)
//           out = (x - mean) * rstd * w + b;   mean[N], rstd[N] are f32 (may be null when not needed).
// Backward: xhat = (x - mean) * rstd,  g = dout * w
//           dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))             (layernorm_backward_dinp)
//           dw += sum_n dout * xhat;  db += sum_n dout     (colsum partials, then colsum_finalize in linear.cu)
// Fused residual + layernorm forward: residual = a + b (stored, rounded to T), then out = layernorm(residual)
//           with the statistics of the stored residual (same result as add followed by layernorm_forward).
// Shapes: inp/out/dout/dinp [N,C]; w, b, dw, db [C]. One warp per row, 8 rows per 256-thread block.
#include "colsum.cuh"

template <class T>
__device__ void layernorm_forward(T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                  const T* __restrict__ inp, const T* __restrict__ w, const T* __restrict__ b, int N,
                                  int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const T* x = inp + (long long)row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s += to_f32(x[c]);
  const float m = warp_sum(s) / C;
  float v = 0.f;
  for (int c = lane; c < C; c += 32) {
    float d = to_f32(x[c]) - m;
    v += d * d;
  }
  const float rs = rsqrtf(warp_sum(v) / C + 1e-5f);
  T* o = out + (long long)row * C;
  for (int c = lane; c < C; c += 32) o[c] = from_f32<T>((to_f32(x[c]) - m) * rs * to_f32(w[c]) + to_f32(b[c]));
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = rs;
  }
}

template <class T>
__device__ void residual_layernorm_forward(T* __restrict__ residual, T* __restrict__ out, float* __restrict__ mean,
                                           float* __restrict__ rstd, const T* __restrict__ a, const T* __restrict__ b,
                                           const T* __restrict__ w, const T* __restrict__ bias, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) {
    const T r = from_f32<T>(to_f32(a[off + c]) + to_f32(b[off + c]));
    residual[off + c] = r;
    s += to_f32(r);
  }
  const float m = warp_sum(s) / C;
  float v = 0.f;
  for (int c = lane; c < C; c += 32) {  // each lane re-reads only what it wrote itself
    const float d = to_f32(residual[off + c]) - m;
    v += d * d;
  }
  const float rs = rsqrtf(warp_sum(v) / C + 1e-5f);
  for (int c = lane; c < C; c += 32)
    out[off + c] = from_f32<T>((to_f32(residual[off + c]) - m) * rs * to_f32(w[c]) + to_f32(bias[c]));
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = rs;
  }
}

template <class T>
__device__ void layernorm_backward_dinp(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp,
                                        const T* __restrict__ w, const float* __restrict__ mean,
                                        const float* __restrict__ rstd, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  const float m = mean[row], rs = rstd[row];
  float sg = 0.f, sgx = 0.f;
  for (int c = lane; c < C; c += 32) {
    float g = to_f32(dout[off + c]) * to_f32(w[c]);
    float xh = (to_f32(inp[off + c]) - m) * rs;
    sg += g;
    sgx += g * xh;
  }
  sg = warp_sum(sg) / C;
  sgx = warp_sum(sgx) / C;
  for (int c = lane; c < C; c += 32) {
    float g = to_f32(dout[off + c]) * to_f32(w[c]);
    float xh = (to_f32(inp[off + c]) - m) * rs;
    dinp[off + c] = from_f32<T>(to_f32(dinp[off + c]) + rs * (g - sg - xh * sgx));
  }
}

#define LAYERNORM_INSTANTIATE(T, sfx)                                                                         \
  extern "C" __global__ void layernorm_forward_##sfx(T* __restrict__ out, float* __restrict__ mean,            \
                                                     float* __restrict__ rstd, const T* __restrict__ inp,      \
                                                     const T* __restrict__ w, const T* __restrict__ b, int N,  \
                                                     int C) {                                                  \
    layernorm_forward<T>(out, mean, rstd, inp, w, b, N, C);                                                   \
  }                                                                                                           \
  RLHF_EXPORT(layernorm_forward_##sfx)                                                                        \
  extern "C" __global__ void residual_layernorm_forward_##sfx(                                                \
      T* __restrict__ residual, T* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,      \
      const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ w, const T* __restrict__ bias,   \
      int N, int C) {                                                                                         \
    residual_layernorm_forward<T>(residual, out, mean, rstd, a, b, w, bias, N, C);                            \
  }                                                                                                           \
  RLHF_EXPORT(residual_layernorm_forward_##sfx)                                                               \
  extern "C" __global__ void layernorm_backward_dinp_##sfx(T* __restrict__ dinp, const T* __restrict__ dout,  \
                                                           const T* __restrict__ inp, const T* __restrict__ w, \
                                                           const float* __restrict__ mean,                    \
                                                           const float* __restrict__ rstd, int N, int C) {    \
    layernorm_backward_dinp<T>(dinp, dout, inp, w, mean, rstd, N, C);                                        \
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
