// Unfused causal attention, forward only: the classic route the fused kernel (attention.cu) is benchmarked
// against. The two GEMMs are cuBLAS calls made elsewhere; this file has the three small kernels around them.
//
// With C = NH * HS, qkv [B,T,3C] (q in columns 0..C, k in C..2C, v in 2C..3C; head h in columns
// h*HS..(h+1)*HS of each section):
//   attention_permute:   q[b,h,t,d] = qkv[b,t,h*HS+d], k[b,h,t,d] = qkv[b,t,C+h*HS+d],
//                        v[b,h,t,d] = qkv[b,t,2C+h*HS+d]                        q, k, v: [B,NH,T,HS]
//   (GEMM)               S[bh,i,j] = q_i . k_j                                   S: [B*NH,T,T] row-major
//   softmax_causal:      P[bh,i,j] = exp(scale S[bh,i,j] - m_i) / sum_{j'<=i} exp(scale S[bh,i,j'] - m_i)
//                        for j <= i, m_i = max_{j<=i} scale S[bh,i,j]; exactly 0 for j > i     P: [B*NH,T,T]
//   (GEMM)               Y = P V                                                 Y: [B,NH,T,HS]
//   attention_unpermute: out[b,t,h*HS+d] = Y[b,h,t,d]                            out: [B,T,C]
//
// permute / unpermute: one thread per element of the [B,NH,T,HS] side (permute) or of out (unpermute); both
// sides of each copy are contiguous along d (resp. along t*C+c), so warps read and write runs of HS elements.
// softmax_causal: one warp per row (SMX_WARPS rows per block). Lane l visits columns l, l+32, ... (coalesced):
// pass 1 keeps a per-lane running max and sum (online), merged across the warp in f32; pass 2 rereads the
// row and writes the normalised probabilities, then zeros for j > i (`x >= m` for `x > m` in pass 1 is an
// equivalent mutant for finite scores: a tie adds 1 to l either way). Entries above the diagonal of S are
// never read (they may hold anything, NaN included). Each element is read and written by the same lane in
// the same pass, so p == s (in place) is allowed.
#include "common.cuh"
#include "geometry.cuh"  // SMX_WARPS

template <class T>
__device__ void attention_permute(T* __restrict__ q, T* __restrict__ k, T* __restrict__ v, const T* __restrict__ qkv,
                                  int B, int Tn, int NH, int HS) {
  const long long n = (long long)B * NH * Tn * HS;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // 32-bit index arithmetic (64-bit division is emulated): the launch layer checks 3n < 2^31.
  const int ii = (int)i, C = NH * HS;
  const int d = ii % HS, r = ii / HS;  // r = (b*NH + h)*T + t
  const int t = r % Tn, bh = r / Tn;
  const int h = bh % NH, b = bh / NH;
  const T* src = qkv + (b * Tn + t) * 3 * C + h * HS + d;
  q[ii] = src[0];
  k[ii] = src[C];
  v[ii] = src[2 * C];
}

template <class T>
__device__ void attention_unpermute(T* __restrict__ out, const T* __restrict__ y, int B, int Tn, int NH, int HS) {
  const int C = NH * HS;
  const long long n = (long long)B * Tn * C;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int ii = (int)i;  // n < 2^31 (checked at launch)
  const int c = ii % C, bt = ii / C;  // bt = b*T + t
  const int t = bt % Tn, b = bt / Tn;
  const int h = c / HS, d = c % HS;
  out[ii] = y[((b * NH + h) * Tn + t) * HS + d];
}

// Not __restrict__: p may alias s.
template <class T>
__device__ void softmax_causal(T* p, const T* s, int BH, int Tn, float scale) {
  const int lane = threadIdx.x % 32;
  const long long row = (long long)blockIdx.x * SMX_WARPS + threadIdx.x / 32;
  if (row >= (long long)BH * Tn) return;  // uniform per warp
  const int i = (int)row % Tn;            // query index (BH*T*T < 2^31, checked at launch): columns 0..i visible
  const T* sr = s + row * Tn;
  T* pr = p + row * Tn;
  float m = -INFINITY, l = 0.f;
  for (int j = lane; j <= i; j += 32) {
    const float x = scale * to_f32(sr[j]);
    if (x > m) {
      l = l * __expf(m - x) + 1.f;  // first element: m = -inf, exp(-inf) = 0
      m = x;
    } else {
      l += __expf(x - m);
    }
  }
  const float M = warp_max(m);  // finite: column 0 is always visible
  l = m == -INFINITY ? 0.f : l * __expf(m - M);
  const float inv = 1.f / warp_sum(l);
  for (int j = lane; j <= i; j += 32) pr[j] = from_f32<T>(__expf(scale * to_f32(sr[j]) - M) * inv);
  const T zero = from_f32<T>(0.f);
  for (int j = i + 1 + lane; j < Tn; j += 32) pr[j] = zero;
}

#define UNFUSED_INSTANTIATE(T, sfx)                                                                             \
  extern "C" __global__ void attention_permute_##sfx(T* __restrict__ q, T* __restrict__ k, T* __restrict__ v,   \
                                                     const T* __restrict__ qkv, int B, int Tn, int NH, int HS) { \
    attention_permute<T>(q, k, v, qkv, B, Tn, NH, HS);                                                          \
  }                                                                                                             \
  RLHF_EXPORT(attention_permute_##sfx)                                                                          \
  extern "C" __global__ void attention_unpermute_##sfx(T* __restrict__ out, const T* __restrict__ y, int B,      \
                                                       int Tn, int NH, int HS) {                                \
    attention_unpermute<T>(out, y, B, Tn, NH, HS);                                                              \
  }                                                                                                             \
  RLHF_EXPORT(attention_unpermute_##sfx)                                                                        \
  extern "C" __global__ void __launch_bounds__(32 * SMX_WARPS)                                                  \
      softmax_causal_##sfx(T* p, const T* s, int BH, int Tn, float scale) {                                     \
    softmax_causal<T>(p, s, BH, Tn, scale);                                                                     \
  }                                                                                                             \
  RLHF_EXPORT(softmax_causal_##sfx)

UNFUSED_INSTANTIATE(float, f32)
UNFUSED_INSTANTIATE(bf16, bf16)
