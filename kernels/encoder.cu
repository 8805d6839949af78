// Token + position embedding.
// Forward:  out[b,t,:] = wte[tokens[b*T+t], :] + wpe[pos0[b] + t, :]            (thread per element)
// Backward (deterministic, no float atomics):
//   dwte[v,:] += sum over rows i with tokens[i] == v of dout[i,:], in row order.
//     The launch code buckets the rows by token on the host (the token ids are host data when the batch is
//     built): plan = [start[U+1], token[U], rows[N]] with each bucket's rows ascending. One block per bucket,
//     threads over C, rows summed in order: O(N*C) work, deterministic.
//   dwpe[p,:] += sum over b with 0 <= p - pos0[b] < T of dout[b, p - pos0[b], :], in b order.
//     Thread per (p, c) for p in [p_lo, p_lo + P) (the launch code computes the range from host pos0; position
//     p_lo + P is past every row, so a guard `i > P * C` would change nothing: an equivalent mutant).
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
__device__ void encoder_backward_wte(T* __restrict__ dwte, const T* __restrict__ dout, const unsigned* __restrict__ plan,
                                     int U, int C) {
  const unsigned* start = plan;
  const unsigned* token = plan + U + 1;
  const unsigned* rows = plan + 2 * U + 1;
  for (int u = blockIdx.x; u < U; u += gridDim.x) {
    const long long v = token[u];
    const unsigned r0 = start[u], r1 = start[u + 1];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      float s = 0.f;
      for (unsigned k = r0; k < r1; k++) s += to_f32(dout[(long long)rows[k] * C + c]);
      T* d = dwte + v * C + c;
      *d = from_f32<T>(to_f32(*d) + s);
    }
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
                                                        const unsigned* __restrict__ plan, int U, int C) {    \
    encoder_backward_wte<T>(dwte, dout, plan, U, C);                                                          \
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
