// Rotary position embedding, Hugging Face's rotate-half layout, in place on the q and k heads of a packed qkv row.
// Forward:  a = p * inv_freq[i] (f32 product of the f32 table and the position), p = pos0[b] + t;
//           x_i' = x_i cos a - x_{i+d/2} sin a;   x_{i+d/2}' = x_{i+d/2} cos a + x_i sin a        (i < d/2)
// Backward: the transposed rotation (angle -a) on dq, dk in place; v heads untouched in both.
// Shapes: qkv [B, T, (NH + 2 NKV) d] (q heads, then NKV k heads, then NKV v heads), inv_freq f32 [d/2] (host table of
// crate::ops::rope::Rope), pos0 u32 [B]. One thread per (row, q or k head, pair i), EW_BLOCK threads per block;
// f32 arithmetic whatever the storage type.
#include "common.cuh"

// sin and cos of an f32 angle as large as positions make it (thousands of radians): reduced to [-pi, pi] by a
// two-part Cody-Waite split of 2 pi (each fmaf rounds once; the part left out, 6.9e-15 per turn, stays below
// 2e-8 rad for |a| < 2^24), then the fast intrinsics, absolute error ~2^-21.4 on [-pi, pi]. sincosf would be as
// exact but keeps its large-argument reduction table in local memory.
__device__ __forceinline__ void sincos_turns(float a, float* s, float* c) {
  const float k = rintf(a * 0.159154937f);  // a / (2 pi), rounded to whole turns
  const float r = fmaf(-k, -1.748455531e-07f, fmaf(-k, 6.283185482f, a));
  *s = __sinf(r);
  *c = __cosf(r);
}

template <class T>
__device__ void rope_rotate(T* __restrict__ qkv, const float* __restrict__ inv_freq,
                            const unsigned* __restrict__ pos0, int B, int Tn, int NH, int NKV, int half, float sign) {
  const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int heads = NH + NKV;  // the rotated heads: q and k
  if (idx >= (long long)B * Tn * heads * half) return;
  const int i = idx % half;
  const int head = (idx / half) % heads;
  const long long row = idx / ((long long)half * heads);
  const float p = (float)(pos0[row / Tn] + (unsigned)(row % Tn));
  float s, c;
  sincos_turns(p * inv_freq[i], &s, &c);
  s *= sign;
  T* x = qkv + row * (long long)(NH + 2 * NKV) * 2 * half + (long long)head * 2 * half;
  const float x1 = to_f32(x[i]), x2 = to_f32(x[i + half]);
  x[i] = from_f32<T>(x1 * c - x2 * s);
  x[i + half] = from_f32<T>(x2 * c + x1 * s);
}

#define ROPE_INSTANTIATE(T, sfx)                                                                                \
  extern "C" __global__ void rope_forward_##sfx(T* __restrict__ qkv, const float* __restrict__ inv_freq,         \
                                                const unsigned* __restrict__ pos0, int B, int Tn, int NH, int NKV, \
                                                int half) {                                                     \
    rope_rotate<T>(qkv, inv_freq, pos0, B, Tn, NH, NKV, half, 1.f);                                             \
  }                                                                                                             \
  RLHF_EXPORT(rope_forward_##sfx)                                                                               \
  extern "C" __global__ void rope_backward_##sfx(T* __restrict__ dqkv, const float* __restrict__ inv_freq,       \
                                                 const unsigned* __restrict__ pos0, int B, int Tn, int NH,       \
                                                 int NKV, int half) {                                           \
    rope_rotate<T>(dqkv, inv_freq, pos0, B, Tn, NH, NKV, half, -1.f);                                           \
  }                                                                                                             \
  RLHF_EXPORT(rope_backward_##sfx)

ROPE_INSTANTIATE(float, f32)
ROPE_INSTANTIATE(bf16, bf16)
