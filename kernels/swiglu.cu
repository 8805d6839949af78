// SwiGLU on the packed output of the fused [gate | up] projection (Llama, Qwen2, Mistral MLPs).
// Forward:  out = silu(gate) * up,  silu(z) = z s,  s = sigmoid(z)
// Backward: dgate = dout * up * s (1 + z (1 - s));  dup = dout * silu(gate)              (dinp is overwritten)
// Shapes: inp/dinp [N, 2F] (row n: gate in columns 0..F, up in F..2F), out/dout [N, F]. One thread per chunk of W
// output elements (W = the 16-byte pack when F is a multiple of it, else 1: a chunk never straddles two rows),
// EW_BLOCK threads per block; f32 arithmetic whatever the storage type.
#include "common.cuh"

__device__ __forceinline__ float sigmoid_f32(float z) { return 1.f / (1.f + __expf(-z)); }

template <class T, int W>
__device__ void swiglu_forward(T* __restrict__ out, const T* __restrict__ inp, int N, int F) {
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * W;
  if (i >= (long long)N * F) return;
  const long long n = i / F, f = i % F;
  const T* x = inp + n * 2 * F + f;
  const Chunk<T, W> gc = load_chunk<T, W>(x), uc = load_chunk<T, W>(x + F);
  Chunk<T, W> oc;
#pragma unroll
  for (int k = 0; k < W; k++) {
    const float z = to_f32(gc.v[k]);
    oc.v[k] = from_f32<T>(z * sigmoid_f32(z) * to_f32(uc.v[k]));
  }
  store_chunk<T, W>(out + i, oc);
}

template <class T, int W>
__device__ void swiglu_backward(T* __restrict__ dinp, const T* __restrict__ dout, const T* __restrict__ inp, int N,
                                int F) {
  const long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * W;
  if (i >= (long long)N * F) return;
  const long long n = i / F, f = i % F, off = n * 2 * F + f;
  const Chunk<T, W> gc = load_chunk<T, W>(inp + off), uc = load_chunk<T, W>(inp + off + F),
                    dc = load_chunk<T, W>(dout + i);
  Chunk<T, W> dg, du;
#pragma unroll
  for (int k = 0; k < W; k++) {
    const float z = to_f32(gc.v[k]), s = sigmoid_f32(z), d = to_f32(dc.v[k]);
    dg.v[k] = from_f32<T>(d * to_f32(uc.v[k]) * s * (1.f + z * (1.f - s)));
    du.v[k] = from_f32<T>(d * z * s);
  }
  store_chunk<T, W>(dinp + off, dg);
  store_chunk<T, W>(dinp + off + F, du);
}

#define SWIGLU_INSTANTIATE(T, sfx)                                                                           \
  extern "C" __global__ void swiglu_forward_##sfx(T* __restrict__ out, const T* __restrict__ inp, int N,      \
                                                  int F) {                                                   \
    RLHF_CHUNK_DISPATCH(T, F, (swiglu_forward<T, W>(out, inp, N, F)))                                        \
  }                                                                                                          \
  RLHF_EXPORT(swiglu_forward_##sfx)                                                                          \
  extern "C" __global__ void swiglu_backward_##sfx(T* __restrict__ dinp, const T* __restrict__ dout,         \
                                                   const T* __restrict__ inp, int N, int F) {                \
    RLHF_CHUNK_DISPATCH(T, F, (swiglu_backward<T, W>(dinp, dout, inp, N, F)))                                \
  }                                                                                                          \
  RLHF_EXPORT(swiglu_backward_##sfx)

SWIGLU_INSTANTIATE(float, f32)
SWIGLU_INSTANTIATE(bf16, bf16)
