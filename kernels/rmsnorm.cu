// RMSNorm over the last dimension (Llama, Qwen2, Mistral), f32 statistics and arithmetic whatever the storage
// type (as Hugging Face computes it in f32 and casts back).
// Forward:  rstd = 1/sqrt(sum(x^2)/C + eps);  out = x * rstd * w;   rstd[N] is f32 (may be null when not needed).
// Backward: xhat = x * rstd,  g = dout * w
//           dinp += rstd * (g - xhat * mean(g * xhat))                           (rmsnorm_backward_dinp)
//           dw += sum_n dout * xhat          (colsum partials of colsum.cuh, then colsum_finalize in linear.cu)
// Shapes: inp/out/dout/dinp [N,C]; w, dw [C]. One warp per row, RMS_BLOCK / 32 rows per block; rows in chunks
// of W (common.cuh): lane l takes the chunks l, l+32, ..., 16-byte packs when C is a multiple of the pack
// (pointers 16-byte aligned, as the launch layer checks).
#include "colsum.cuh"

template <class T, int W>
__device__ void rmsnorm_forward(T* __restrict__ out, float* __restrict__ rstd, const T* __restrict__ inp,
                                const T* __restrict__ w, int N, int C, float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  float s = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(inp + off + c);
#pragma unroll
    for (int k = 0; k < W; k++) s += to_f32(xc.v[k]) * to_f32(xc.v[k]);
  }
  const float rs = rsqrtf(warp_sum(s) / C + eps);
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(inp + off + c), wc = load_chunk<T, W>(w + c);
    Chunk<T, W> oc;
#pragma unroll
    for (int k = 0; k < W; k++) oc.v[k] = from_f32<T>(to_f32(xc.v[k]) * rs * to_f32(wc.v[k]));
    store_chunk<T, W>(out + off + c, oc);
  }
  if (lane == 0 && rstd) rstd[row] = rs;
}

template <class T, int W>
__device__ void rmsnorm_backward_dinp(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp,
                                      const T* __restrict__ w, const float* __restrict__ rstd, int N, int C) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= N) return;
  const long long off = (long long)row * C;
  const float rs = rstd[row];
  float sgx = 0.f;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> dc = load_chunk<T, W>(dout + off + c), xc = load_chunk<T, W>(inp + off + c),
                      wc = load_chunk<T, W>(w + c);
#pragma unroll
    for (int k = 0; k < W; k++) sgx += to_f32(dc.v[k]) * to_f32(wc.v[k]) * to_f32(xc.v[k]) * rs;
  }
  sgx = warp_sum(sgx) / C;
  for (int c = lane * W; c < C; c += 32 * W) {
    const Chunk<T, W> dc = load_chunk<T, W>(dout + off + c), xc = load_chunk<T, W>(inp + off + c),
                      wc = load_chunk<T, W>(w + c);
    Chunk<T, W> gc = load_chunk<T, W>(dinp + off + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const float g = to_f32(dc.v[k]) * to_f32(wc.v[k]);
      gc.v[k] = from_f32<T>(to_f32(gc.v[k]) + rs * (g - to_f32(xc.v[k]) * rs * sgx));
    }
    store_chunk<T, W>(dinp + off + c, gc);
  }
}

#define RMSNORM_INSTANTIATE(T, sfx)                                                                           \
  extern "C" __global__ void rmsnorm_forward_##sfx(T* __restrict__ out, float* __restrict__ rstd,              \
                                                   const T* __restrict__ inp, const T* __restrict__ w, int N,  \
                                                   int C, float eps) {                                         \
    RLHF_CHUNK_DISPATCH(T, C, (rmsnorm_forward<T, W>(out, rstd, inp, w, N, C, eps)))                          \
  }                                                                                                           \
  RLHF_EXPORT(rmsnorm_forward_##sfx)                                                                          \
  extern "C" __global__ void rmsnorm_backward_dinp_##sfx(T* __restrict__ dinp, const T* __restrict__ dout,    \
                                                         const T* __restrict__ inp, const T* __restrict__ w,   \
                                                         const float* __restrict__ rstd, int N, int C) {      \
    RLHF_CHUNK_DISPATCH(T, C, (rmsnorm_backward_dinp<T, W>(dinp, dout, inp, w, rstd, N, C)))                  \
  }                                                                                                           \
  RLHF_EXPORT(rmsnorm_backward_dinp_##sfx)                                                                    \
  extern "C" __global__ void rmsnorm_backward_partial_##sfx(float* __restrict__ partial,                      \
                                                            const T* __restrict__ dout,                       \
                                                            const T* __restrict__ inp,                        \
                                                            const float* __restrict__ rstd, int N, int C,     \
                                                            int rows_per) {                                   \
    colsum_partial<T, 1>(partial, dout, inp, nullptr, rstd, N, C, rows_per);                                 \
  }                                                                                                           \
  RLHF_EXPORT(rmsnorm_backward_partial_##sfx)

RMSNORM_INSTANTIATE(float, f32)
RMSNORM_INSTANTIATE(bf16, bf16)
