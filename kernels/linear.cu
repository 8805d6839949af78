// Bias add (forward) and bias gradient (backward) of a linear layer, plus the column-sum finalizer shared
// with layernorm's backward.
//   bias_add:      out[N,OC] += bias[OC]                      (thread per element)
//   bias_backward: db[OC] += sum_n dout[n, oc]                 (colsum_partial, then colsum_finalize)
#include "colsum.cuh"

template <class T>
__device__ void bias_add(T* __restrict__ out, const T* __restrict__ bias, int N, int OC) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)N * OC) return;
  out[i] = from_f32<T>(to_f32(out[i]) + to_f32(bias[i % OC]));
}

// dst0[c] += sum_r partial[0][r][c]; if dst1: dst1[c] += sum_r partial[1][r][c]. Fixed order: deterministic.
template <class T>
__device__ void colsum_finalize(T* __restrict__ dst0, T* __restrict__ dst1, const float* __restrict__ partial, int R,
                                int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s0 = 0.f, s1 = 0.f;
  for (int r = 0; r < R; r++) {
    s0 += partial[(long long)r * C + c];
    if (dst1) s1 += partial[((long long)R + r) * C + c];
  }
  dst0[c] = from_f32<T>(to_f32(dst0[c]) + s0);
  if (dst1) dst1[c] = from_f32<T>(to_f32(dst1[c]) + s1);
}

#define LINEAR_INSTANTIATE(T, sfx)                                                                          \
  extern "C" __global__ void bias_add_##sfx(T* __restrict__ out, const T* __restrict__ bias, int N, int OC) { \
    bias_add<T>(out, bias, N, OC);                                                                          \
  }                                                                                                         \
  RLHF_EXPORT(bias_add_##sfx)                                                                               \
  extern "C" __global__ void bias_backward_partial_##sfx(float* __restrict__ partial, const T* __restrict__ dout, \
                                                         int N, int OC, int rows_per) {                    \
    colsum_partial<T, 1>(partial, dout, nullptr, nullptr, nullptr, N, OC, rows_per);                       \
  }                                                                                                         \
  RLHF_EXPORT(bias_backward_partial_##sfx)                                                                  \
  extern "C" __global__ void colsum_finalize_##sfx(T* __restrict__ dst0, T* __restrict__ dst1,               \
                                                   const float* __restrict__ partial, int R, int C) {      \
    colsum_finalize<T>(dst0, dst1, partial, R, C);                                                          \
  }                                                                                                         \
  RLHF_EXPORT(colsum_finalize_##sfx)

LINEAR_INSTANTIATE(float, f32)
LINEAR_INSTANTIATE(bf16, bf16)
