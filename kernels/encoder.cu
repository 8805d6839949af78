// Token + position embedding.
// Forward:  out[b,t,:] = wte[tokens[b*T+t], :] + wpe[pos0[b] + t, :]            (thread per element)
// Backward (deterministic, no float atomics):
//   dwte[v,:] += sum over rows i with tokens[i] == v of dout[i,:], in row order.
//     One block per row i; the block owns token v = tokens[i] only if i is v's first occurrence, and then sums
//     every later occurrence in order (threads over C). O(N) token reads per block: fine for N up to ~64k.
//   dwpe[p,:] += sum over b with 0 <= p - pos0[b] < T of dout[b, p - pos0[b], :], in b order.
//     Thread per (p, c) for p in [p_lo, p_lo + P) (the launch code computes the range from host pos0).
#include "common.cuh"

template <class T>
__device__ void encoder_forward(T* __restrict__ out, const unsigned* __restrict__ tokens, const T* __restrict__ wte,
                                const T* __restrict__ wpe, const unsigned* __restrict__ pos0, int B, int Tn, int C) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)B * Tn * C) return;
  const int c = (int)(i % C);
  const long long row = i / C;
  const int b = (int)(row / Tn), t = (int)(row % Tn);
  const long long tok = tokens[row];
  const long long p = (long long)pos0[b] + t;
  out[i] = from_f32<T>(to_f32(wte[tok * C + c]) + to_f32(wpe[p * C + c]));
}

template <class T>
__device__ void encoder_backward_wte(T* __restrict__ dwte, const T* __restrict__ dout,
                                     const unsigned* __restrict__ tokens, int N, int C) {
  const int i = blockIdx.x;
  const unsigned v = tokens[i];
  // Is row i the first occurrence of v? (every thread scans; broadcast loads)
  for (int j = 0; j < i; j++)
    if (tokens[j] == v) return;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float s = 0.f;
    for (int j = i; j < N; j++)
      if (tokens[j] == v) s += to_f32(dout[(long long)j * C + c]);
    T* d = dwte + (long long)v * C + c;
    *d = from_f32<T>(to_f32(*d) + s);
  }
}

template <class T>
__device__ void encoder_backward_wpe(T* __restrict__ dwpe, const T* __restrict__ dout,
                                     const unsigned* __restrict__ pos0, int B, int Tn, int C, int p_lo, int P) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (long long)P * C) return;
  const int c = (int)(i % C);
  const int p = p_lo + (int)(i / C);
  float s = 0.f;
  bool any = false;
  for (int b = 0; b < B; b++) {
    const int t = p - (int)pos0[b];
    if (t >= 0 && t < Tn) {
      s += to_f32(dout[((long long)b * Tn + t) * C + c]);
      any = true;
    }
  }
  if (any) {
    T* d = dwpe + (long long)p * C + c;
    *d = from_f32<T>(to_f32(*d) + s);
  }
}

#define ENCODER_INSTANTIATE(T, sfx)                                                                           \
  extern "C" __global__ void encoder_forward_##sfx(T* __restrict__ out, const unsigned* __restrict__ tokens,   \
                                                   const T* __restrict__ wte, const T* __restrict__ wpe,       \
                                                   const unsigned* __restrict__ pos0, int B, int Tn, int C) {  \
    encoder_forward<T>(out, tokens, wte, wpe, pos0, B, Tn, C);                                                \
  }                                                                                                           \
  RLHF_EXPORT(encoder_forward_##sfx)                                                                          \
  extern "C" __global__ void encoder_backward_wte_##sfx(T* __restrict__ dwte, const T* __restrict__ dout,     \
                                                        const unsigned* __restrict__ tokens, int N, int C) {  \
    encoder_backward_wte<T>(dwte, dout, tokens, N, C);                                                        \
  }                                                                                                           \
  RLHF_EXPORT(encoder_backward_wte_##sfx)                                                                     \
  extern "C" __global__ void encoder_backward_wpe_##sfx(T* __restrict__ dwpe, const T* __restrict__ dout,     \
                                                        const unsigned* __restrict__ pos0, int B, int Tn,      \
                                                        int C, int p_lo, int P) {                             \
    encoder_backward_wpe<T>(dwpe, dout, pos0, B, Tn, C, p_lo, P);                                             \
  }                                                                                                           \
  RLHF_EXPORT(encoder_backward_wpe_##sfx)

ENCODER_INSTANTIATE(float, f32)
ENCODER_INSTANTIATE(bf16, bf16)
