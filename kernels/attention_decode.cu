// Decode attention: one query row per (batch row, head) against a KV cache, the step of incremental
// decoding (contract of crate::ops::attention::forward with Tq = 1):
//   row b, head h, query at absolute position p = pos0[b], keys j = 0..min(p, Tk-1) of kv head g = h / (NH / NKV):
//   s_j = (q . k_j) / sqrt(HS);  lse[b,h] = log sum_j exp(s_j);  out[b,h*HS+d] = sum_j exp(s_j - lse) v_j[d]
//   q from q_src[B,1,W], k, v from kv[B,Tk,W] (W = C + 2 NKV HS: q head h at columns h HS, k head g at C + g HS,
//   v head g at C + (NKV + g) HS, as in attention.cu); out [B,1,C]; lse f32 [B,NH,1].
// The training kernel (attention.cu) gives a query row one warp, so a decode step would run one warp per
// (b, h) over the whole cache; here the keys are split among the DEC_WARPS warps of a block (warp w takes the
// 32-key tiles w, w + DEC_WARPS, ...), each keeps its own online softmax (max m_w, sum l_w, weighted sum
// acc_w), and warp 0 merges them: M = max m_w, L = sum_w l_w exp(m_w - M),
// out = sum_w acc_w exp(m_w - M) / L, lse = M + log L. Within a warp: a lane per key for the dot products, a
// lane per head dim d = lane + 32k (k < KPL) for the weighted sums, as in attention.cu.
// Grid (NH, B), DEC_WARPS * 32 threads; dynamic shared memory (floats): HS (q) + 32 per warp (p) + HS + 2 per
// warp (the partial states).
#include "common.cuh"
#include "geometry.cuh"  // DEC_WARPS

template <class T, int KPL>
__device__ void attention_decode(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q_src,
                                 const T* __restrict__ kv, const unsigned* __restrict__ pos0, int Tk, int NH, int NKV,
                                 int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int h = blockIdx.x, b = blockIdx.y, g = h / (NH / NKV);
  float* qs = smem;
  float* ps = qs + HS + warp * 32;
  float* part = qs + HS + DEC_WARPS * 32;  // per warp: acc [HS], m, l
  const float scale = rsqrtf((float)HS);
  const long long W = C + 2LL * NKV * HS;
  const T* qrow = q_src + (long long)b * W + h * HS;
  const T* kbase = kv + (long long)b * Tk * W + C + g * HS;
  const T* vbase = kbase + NKV * HS;
  for (int d = threadIdx.x; d < HS; d += blockDim.x) qs[d] = to_f32(qrow[d]) * scale;
  __syncthreads();
  const int nkeys = min((int)pos0[b] + 1, Tk);
  float m = -INFINITY, l = 0.f;
  float acc[KPL];
#pragma unroll
  for (int k = 0; k < KPL; k++) acc[k] = 0.f;
  for (int j0 = warp * 32; j0 < nkeys; j0 += DEC_WARPS * 32) {
    const int j = j0 + lane;
    float s = -INFINITY;
    if (j < nkeys) {
      const T* kr = kbase + (long long)j * W;
      s = 0.f;
      for (int d = 0; d < HS; d++) s += qs[d] * to_f32(kr[d]);
    }
    const float m_new = fmaxf(m, warp_max(s));
    const float pj = j < nkeys ? __expf(s - m_new) : 0.f;
    const float corr = __expf(m - m_new);
    l = l * corr + warp_sum(pj);
    ps[lane] = pj;
    __syncwarp();
    const int nj = min(32, nkeys - j0);
#pragma unroll
    for (int k = 0; k < KPL; k++) {
      const int d = lane + 32 * k;
      float a = acc[k] * corr;
      if (d < HS)
        for (int jj = 0; jj < nj; jj++) a += ps[jj] * to_f32(vbase[(long long)(j0 + jj) * W + d]);
      acc[k] = a;
    }
    __syncwarp();
    m = m_new;
  }
  float* mine = part + warp * (HS + 2);
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) mine[d] = acc[k];
  }
  if (lane == 0) {
    mine[HS] = m;
    mine[HS + 1] = l;
  }
  __syncthreads();
  if (warp != 0) return;
  // Warp 0 always has key 0, so M is finite; a warp without keys has m = -inf, l = 0 and weighs 0.
  float M = -INFINITY;
  for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, part[w * (HS + 2) + HS]);
  float L = 0.f;
  for (int w = 0; w < DEC_WARPS; w++) L += part[w * (HS + 2) + HS + 1] * __expf(part[w * (HS + 2) + HS] - M);
  T* orow = out + (long long)b * C + h * HS;
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) {
      float o = 0.f;
      for (int w = 0; w < DEC_WARPS; w++) o += part[w * (HS + 2) + d] * __expf(part[w * (HS + 2) + HS] - M);
      orow[d] = from_f32<T>(o / L);
    }
  }
  if (lane == 0) lse[(long long)b * NH + h] = M + logf(L);
}

#define DECODE_INSTANTIATE(T, sfx, KPL)                                                                     \
  extern "C" __global__ void attention_decode_hs##KPL##_##sfx(                                              \
      T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q_src, const T* __restrict__ kv, \
      const unsigned* __restrict__ pos0, int Tk, int NH, int NKV, int C) {                                  \
    attention_decode<T, KPL>(out, lse, q_src, kv, pos0, Tk, NH, NKV, C);                                    \
  }                                                                                                         \
  RLHF_EXPORT(attention_decode_hs##KPL##_##sfx)

DECODE_INSTANTIATE(float, f32, 1)
DECODE_INSTANTIATE(float, f32, 2)
DECODE_INSTANTIATE(float, f32, 4)
DECODE_INSTANTIATE(bf16, bf16, 1)
DECODE_INSTANTIATE(bf16, bf16, 2)
DECODE_INSTANTIATE(bf16, bf16, 4)
