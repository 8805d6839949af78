// GELU, tanh approximation (GPT-2's "gelu_new"), forward and backward.
//   y  = 0.5 x (1 + tanh(u)),  u = s (x + 0.044715 x^3),  s = sqrt(2/pi)
//   dx = dy (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2))      (dinp is overwritten)
// Shapes: any n, elementwise. One thread per 16-byte pack (4 f32 / 8 bf16); the last pack may be partial.
// Pointers must be 16-byte aligned (checked by the launch code). Two guards are exact only for speed, so their
// off-by-one mutants change nothing (kernels/mutants-allowed.txt): a thread at i == n finds the element loop
// empty (`i > n`), and a last full pack gives the same values through the element loop (`i + P < n`).
#include "common.cuh"

#define GELU_S 0.7978845608028654f
#define GELU_K 0.044715f

__device__ __forceinline__ float gelu_fwd(float x) {
  float u = GELU_S * (x + GELU_K * x * x * x);
  return 0.5f * x * (1.f + tanhf(u));
}
__device__ __forceinline__ float gelu_grad(float x) {
  float u = GELU_S * (x + GELU_K * x * x * x);
  float th = tanhf(u);
  return 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * GELU_S * (1.f + 3.f * GELU_K * x * x);
}

template <class T>
__device__ void gelu_forward(T* __restrict__ out, const T* __restrict__ inp, int n) {
  constexpr int P = Pack<T>::N;
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * P;
  if (i >= n) return;
  if (i + P <= n) {
    Pack<T> x = load_pack(inp + i), y;
#pragma unroll
    for (int k = 0; k < P; k++) y.v[k] = from_f32<T>(gelu_fwd(to_f32(x.v[k])));
    store_pack(out + i, y);
  } else {
    for (long long k = i; k < n; k++) out[k] = from_f32<T>(gelu_fwd(to_f32(inp[k])));
  }
}

template <class T>
__device__ void gelu_backward(T* __restrict__ dinp, const T* __restrict__ inp, const T* __restrict__ dout, int n) {
  constexpr int P = Pack<T>::N;
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * P;
  if (i >= n) return;
  if (i + P <= n) {
    Pack<T> x = load_pack(inp + i), dy = load_pack(dout + i), dx;
#pragma unroll
    for (int k = 0; k < P; k++) dx.v[k] = from_f32<T>(gelu_grad(to_f32(x.v[k])) * to_f32(dy.v[k]));
    store_pack(dinp + i, dx);
  } else {
    for (long long k = i; k < n; k++) dinp[k] = from_f32<T>(gelu_grad(to_f32(inp[k])) * to_f32(dout[k]));
  }
}

#define GELU_INSTANTIATE(T, sfx)                                                                              \
  extern "C" __global__ void gelu_forward_##sfx(T* __restrict__ out, const T* __restrict__ inp, int n) {     \
    gelu_forward<T>(out, inp, n);                                                                             \
  }                                                                                                           \
  RLHF_EXPORT(gelu_forward_##sfx)                                                                             \
  extern "C" __global__ void gelu_backward_##sfx(T* __restrict__ dinp, const T* __restrict__ inp,            \
                                                 const T* __restrict__ dout, int n) {                        \
    gelu_backward<T>(dinp, inp, dout, n);                                                                     \
  }                                                                                                           \
  RLHF_EXPORT(gelu_backward_##sfx)

GELU_INSTANTIATE(float, f32)
GELU_INSTANTIATE(bf16, bf16)
