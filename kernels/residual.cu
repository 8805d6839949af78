// Elementwise stream ops: residual add, accumulate, scale, casts between f32 and bf16.
//   add:        out = a + b
//   accumulate: dst += src
//   scale:      buf *= s
//   cast:       dst (bf16) = round(src (f32)) and dst (f32) = src (bf16)
// One thread per 16-byte pack (the last pack may be partial); pointers 16-byte aligned (checked at launch).
// As in gelu.cu, the early return and the full-pack test are exact only for speed: `i > n` and `i + P < n`
// are equivalent mutants (kernels/mutants-allowed.txt).
#include "common.cuh"

template <class T>
__device__ void residual_add(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, int n) {
  constexpr int P = Pack<T>::N;
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * P;
  if (i >= n) return;
  if (i + P <= n) {
    Pack<T> x = load_pack(a + i), y = load_pack(b + i), z;
#pragma unroll
    for (int k = 0; k < P; k++) z.v[k] = from_f32<T>(to_f32(x.v[k]) + to_f32(y.v[k]));
    store_pack(out + i, z);
  } else {
    for (long long k = i; k < n; k++) out[k] = from_f32<T>(to_f32(a[k]) + to_f32(b[k]));
  }
}

// Not __restrict__: dst may alias src (dst += dst doubles).
template <class T>
__device__ void residual_accumulate(T* dst, const T* src, int n) {
  constexpr int P = Pack<T>::N;
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * P;
  if (i >= n) return;
  if (i + P <= n) {
    Pack<T> x = load_pack(dst + i), y = load_pack(src + i);
#pragma unroll
    for (int k = 0; k < P; k++) x.v[k] = from_f32<T>(to_f32(x.v[k]) + to_f32(y.v[k]));
    store_pack(dst + i, x);
  } else {
    for (long long k = i; k < n; k++) dst[k] = from_f32<T>(to_f32(dst[k]) + to_f32(src[k]));
  }
}

template <class T>
__device__ void residual_scale(T* buf, float s, int n) {
  constexpr int P = Pack<T>::N;
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * P;
  if (i >= n) return;
  if (i + P <= n) {
    Pack<T> x = load_pack(buf + i);
#pragma unroll
    for (int k = 0; k < P; k++) x.v[k] = from_f32<T>(to_f32(x.v[k]) * s);
    store_pack(buf + i, x);
  } else {
    for (long long k = i; k < n; k++) buf[k] = from_f32<T>(to_f32(buf[k]) * s);
  }
}

#define RESIDUAL_INSTANTIATE(T, sfx)                                                                       \
  extern "C" __global__ void add_##sfx(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b, \
                                       int n) {                                                            \
    residual_add<T>(out, a, b, n);                                                                         \
  }                                                                                                        \
  RLHF_EXPORT(add_##sfx)                                                                                   \
  extern "C" __global__ void accumulate_##sfx(T* dst, const T* src, int n) { residual_accumulate<T>(dst, src, n); } \
  RLHF_EXPORT(accumulate_##sfx)                                                                            \
  extern "C" __global__ void scale_##sfx(T* buf, float s, int n) { residual_scale<T>(buf, s, n); }         \
  RLHF_EXPORT(scale_##sfx)

RESIDUAL_INSTANTIATE(float, f32)
RESIDUAL_INSTANTIATE(bf16, bf16)

// Casts, one element per thread.
extern "C" __global__ void cast_f32_to_bf16(bf16* __restrict__ dst, const float* __restrict__ src, int n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __float2bfloat16_rn(src[i]);
}
RLHF_EXPORT(cast_f32_to_bf16)
extern "C" __global__ void cast_bf16_to_f32(float* __restrict__ dst, const bf16* __restrict__ src, int n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = __bfloat162float(src[i]);
}
RLHF_EXPORT(cast_bf16_to_f32)
