// Fused causal multi-head attention (flash style: online softmax, the T x T scores never leave the chip;
// only the log-sum-exp per query is saved for the backward).
//
// Grouped-query attention (contract of crate::ops::attention): NH query heads, NKV kv heads (NH % NKV == 0), a
// qkv row W = C + 2 NKV HS wide (C = NH HS): q head h at columns h HS, k head g at C + g HS, v head g at
// C + (NKV + g) HS; query head h reads kv head g = h / (NH / NKV). NKV = NH is multi-head attention (W = 3C).
// Forward, row b, head h, query t at absolute position p = pos0[b] + t, keys j = 0..min(p, Tk-1) of kv head g:
//   s_j = (q_t . k_j) / sqrt(HS);  lse[b,h,t] = log sum_j exp(s_j);  out[b,t,h*HS+d] = sum_j exp(s_j - lse) v_j[d]
//   q from q_src[B,Tq,W]; k, v from kv[B,Tk,W]; out [B,Tq,C]; lse f32 [B,NH,Tq].
// Backward (training form: kv = q_src = qkv, Tq = Tk = T, pos0 = 0), D_t = dout_t . out_t, P = exp(s - lse):
//   dP_tj = dout_t . v_j;  dS_tj = P_tj (dP_tj - D_t)
//   dq_t = sum_j dS_tj k_j / sqrt(HS)          (attention_backward_dq: warp per query row and head; also writes D)
//   dk_j = sum_h sum_t dS_tj q_t / sqrt(HS);  dv_j = sum_h sum_t P_tj dout_t, h over kv head g's query heads
//   in head order     (attention_backward_dkv: warp per key row and kv head)
//   dqkv [B,T,W] is overwritten; no atomics, fixed summation order (deterministic).
//
// Layout of the work: one warp per (b, head, row), ATT_WARPS (4, geometry.cuh) warps per block; grid
// (ceil(rows/4), NH, B), NKV for the dkv kernels. Within a warp, each lane takes one of 32 keys (or queries) at a time and computes its
// full dot product from the row vector staged in shared memory; the 32 probabilities are broadcast through
// shared memory for the weighted sums, where each lane owns head dims d = lane + 32k (k < KPL, HS <= 32 * KPL).
// Dynamic shared memory per warp (floats): forward HS + 32, backward_dq 2 HS + 32, backward_dkv 2 HS + 64.
// Several bounds only save work, so moving them by one changes no output (equivalent mutants, listed in
// kernels/mutants-allowed.txt): a pass of 32 keys or queries that starts at the bound adds nothing (nj, ni = 0);
// a key at j = nkeys has s = -inf, so p = 0 unguarded; a dim d = HS (k = KPL) is computed but never stored.
//
// These kernels use CUDA cores (FFMA). At the bottom: the tensor-core forward (mma.sync) and backward (WMMA)
// for bf16 with head size 64 (attention_forward_mma_bf16, attention_backward_dq_wmma_bf16,
// attention_backward_dkv_wmma_bf16).
#include "common.cuh"
#include "geometry.cuh"  // ATT_WARPS; the tensor-core kernels' tiles and shared-memory layouts

template <class T, int KPL>
__device__ void attention_forward(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q_src,
                                  const T* __restrict__ kv, const unsigned* __restrict__ pos0, int Tq, int Tk, int NH,
                                  int NKV, int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int t = blockIdx.x * ATT_WARPS + warp, h = blockIdx.y, b = blockIdx.z, g = h / (NH / NKV);
  if (t >= Tq) return;
  float* qs = smem + warp * (HS + 32);
  float* ps = qs + HS;
  const float scale = rsqrtf((float)HS);
  const long long W = C + 2LL * NKV * HS;
  const T* qrow = q_src + ((long long)b * Tq + t) * W + h * HS;
  const T* kbase = kv + (long long)b * Tk * W + C + g * HS;
  const T* vbase = kbase + NKV * HS;
  for (int d = lane; d < HS; d += 32) qs[d] = to_f32(qrow[d]) * scale;
  __syncwarp();
  const int nkeys = min((int)pos0[b] + t + 1, Tk);
  float m = -INFINITY, l = 0.f;
  float acc[KPL];
#pragma unroll
  for (int k = 0; k < KPL; k++) acc[k] = 0.f;
  for (int j0 = 0; j0 < nkeys; j0 += 32) {
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
  T* orow = out + ((long long)b * Tq + t) * C + h * HS;
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) orow[d] = from_f32<T>(acc[k] / l);
  }
  if (lane == 0) lse[((long long)b * NH + h) * Tq + t] = m + logf(l);
}

template <class T, int KPL>
__device__ void attention_backward_dq(T* __restrict__ dqkv, float* __restrict__ Dbuf, const T* __restrict__ dout,
                                      const T* __restrict__ qkv, const T* __restrict__ out,
                                      const float* __restrict__ lse, int Tn, int NH, int NKV, int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int t = blockIdx.x * ATT_WARPS + warp, h = blockIdx.y, b = blockIdx.z, g = h / (NH / NKV);
  if (t >= Tn) return;
  float* qs = smem + warp * (2 * HS + 32);
  float* dos = qs + HS;
  float* ps = dos + HS;
  const float scale = rsqrtf((float)HS);
  const long long W = C + 2LL * NKV * HS;
  const T* base = qkv + (long long)b * Tn * W;
  const T* kbase = base + C + g * HS;
  const T* vbase = kbase + NKV * HS;
  const long long rowo = ((long long)b * Tn + t) * C + h * HS;
  float dd = 0.f;
  for (int d = lane; d < HS; d += 32) {
    qs[d] = to_f32(base[t * W + h * HS + d]) * scale;
    const float g = to_f32(dout[rowo + d]);
    dos[d] = g;
    dd += g * to_f32(out[rowo + d]);
  }
  const float D = warp_sum(dd);
  const float L = lse[((long long)b * NH + h) * Tn + t];
  if (lane == 0) Dbuf[((long long)b * NH + h) * Tn + t] = D;
  __syncwarp();
  float acc[KPL];
#pragma unroll
  for (int k = 0; k < KPL; k++) acc[k] = 0.f;
  const int nkeys = t + 1;
  for (int j0 = 0; j0 < nkeys; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.f;
    if (j < nkeys) {
      const T* kr = kbase + (long long)j * W;
      const T* vr = vbase + (long long)j * W;
      float s = 0.f, dp = 0.f;
      for (int d = 0; d < HS; d++) {
        s += qs[d] * to_f32(kr[d]);
        dp += dos[d] * to_f32(vr[d]);
      }
      ds = __expf(s - L) * (dp - D);
    }
    ps[lane] = ds;
    __syncwarp();
    const int nj = min(32, nkeys - j0);
#pragma unroll
    for (int k = 0; k < KPL; k++) {
      const int d = lane + 32 * k;
      if (d < HS)
        for (int jj = 0; jj < nj; jj++) acc[k] += ps[jj] * to_f32(kbase[(long long)(j0 + jj) * W + d]);
    }
    __syncwarp();
  }
  T* dq = dqkv + ((long long)b * Tn + t) * W + h * HS;
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) dq[d] = from_f32<T>(acc[k] * scale);
  }
}

// Warp per (b, kv head g, key row j): dk_j, dv_j summed over g's query heads h = g G .. g G + G - 1 (G = NH / NKV)
// in head order, each head's queries i = j..T-1 in passes of 32.
template <class T, int KPL>
__device__ void attention_backward_dkv(T* __restrict__ dqkv, const float* __restrict__ Dbuf, const T* __restrict__ dout,
                                       const T* __restrict__ qkv, const float* __restrict__ lse, int Tn, int NH,
                                       int NKV, int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH, G = NH / NKV;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int j = blockIdx.x * ATT_WARPS + warp, g = blockIdx.y, b = blockIdx.z;
  if (j >= Tn) return;
  float* ks = smem + warp * (2 * HS + 64);
  float* vs = ks + HS;
  float* ps = vs + HS;
  float* dss = ps + 32;
  const float scale = rsqrtf((float)HS);
  const long long W = C + 2LL * NKV * HS;
  const T* base = qkv + (long long)b * Tn * W;
  const T* krow = base + (long long)j * W + C + g * HS;
  for (int d = lane; d < HS; d += 32) {
    ks[d] = to_f32(krow[d]) * scale;
    vs[d] = to_f32(krow[NKV * HS + d]);
  }
  __syncwarp();
  float dk[KPL], dv[KPL];
#pragma unroll
  for (int k = 0; k < KPL; k++) dk[k] = dv[k] = 0.f;
  for (int h = g * G; h < g * G + G; h++) {
    const float* Lb = lse + ((long long)b * NH + h) * Tn;
    const float* Db = Dbuf + ((long long)b * NH + h) * Tn;
    for (int i0 = j; i0 < Tn; i0 += 32) {
      const int i = i0 + lane;
      float p = 0.f, ds = 0.f;
      if (i < Tn) {
        const T* qr = base + (long long)i * W + h * HS;
        const T* dr = dout + ((long long)b * Tn + i) * C + h * HS;
        float s = 0.f, dp = 0.f;
        for (int d = 0; d < HS; d++) {
          s += ks[d] * to_f32(qr[d]);
          dp += vs[d] * to_f32(dr[d]);
        }
        p = __expf(s - Lb[i]);
        ds = p * (dp - Db[i]);
      }
      ps[lane] = p;
      dss[lane] = ds;
      __syncwarp();
      const int ni = min(32, Tn - i0);
#pragma unroll
      for (int k = 0; k < KPL; k++) {
        const int d = lane + 32 * k;
        if (d < HS)
          for (int ii = 0; ii < ni; ii++) {
            const long long r = (long long)b * Tn + i0 + ii;
            dv[k] += ps[ii] * to_f32(dout[r * C + h * HS + d]);
            dk[k] += dss[ii] * to_f32(qkv[r * W + h * HS + d]);
          }
      }
      __syncwarp();
    }
  }
  T* dkr = dqkv + ((long long)b * Tn + j) * W + C + g * HS;
  T* dvr = dkr + NKV * HS;
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) {
      dkr[d] = from_f32<T>(dk[k] * scale);
      dvr[d] = from_f32<T>(dv[k]);
    }
  }
}

// Instantiations: dtype x KPL (head size up to 32, 64, 128).
#define ATT_INST_K(T, sfx, KPL)                                                                                \
  extern "C" __global__ void attention_forward_hs##KPL##_##sfx(                                               \
      T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q_src, const T* __restrict__ kv,    \
      const unsigned* __restrict__ pos0, int Tq, int Tk, int NH, int NKV, int C) {                            \
    attention_forward<T, KPL>(out, lse, q_src, kv, pos0, Tq, Tk, NH, NKV, C);                                 \
  }                                                                                                           \
  RLHF_EXPORT(attention_forward_hs##KPL##_##sfx)                                                              \
  extern "C" __global__ void attention_backward_dq_hs##KPL##_##sfx(                                           \
      T* __restrict__ dqkv, float* __restrict__ Dbuf, const T* __restrict__ dout, const T* __restrict__ qkv,   \
      const T* __restrict__ out, const float* __restrict__ lse, int Tn, int NH, int NKV, int C) {             \
    attention_backward_dq<T, KPL>(dqkv, Dbuf, dout, qkv, out, lse, Tn, NH, NKV, C);                           \
  }                                                                                                           \
  RLHF_EXPORT(attention_backward_dq_hs##KPL##_##sfx)                                                          \
  extern "C" __global__ void attention_backward_dkv_hs##KPL##_##sfx(                                          \
      T* __restrict__ dqkv, const float* __restrict__ Dbuf, const T* __restrict__ dout,                       \
      const T* __restrict__ qkv, const float* __restrict__ lse, int Tn, int NH, int NKV, int C) {             \
    attention_backward_dkv<T, KPL>(dqkv, Dbuf, dout, qkv, lse, Tn, NH, NKV, C);                               \
  }                                                                                                           \
  RLHF_EXPORT(attention_backward_dkv_hs##KPL##_##sfx)

#define ATT_INST(T, sfx) ATT_INST_K(T, sfx, 1) ATT_INST_K(T, sfx, 2) ATT_INST_K(T, sfx, 4)
ATT_INST(float, f32)
ATT_INST(bf16, bf16)

// ---------------------------------------------------------------------------------------------------------
// Tensor-core kernels for bf16 with head size 64: the forward below (mma.sync through PTX, accumulators in
// registers) and the backward further down (WMMA).

// Stage rows row0 .. row0+63 (64 bf16 each, row stride `stride` elements) of src into a padded tile; rows at
// or beyond n are zero. 16-byte packs: src and stride must keep 16-byte alignment (checked by the launcher).
__device__ __forceinline__ void wb_stage(bf16* dst, const bf16* __restrict__ src, long long stride, int row0, int n) {
  for (int i = threadIdx.x; i < WB_T * (WA_D / 8); i += blockDim.x) {
    const int r = i / (WA_D / 8), c = (i % (WA_D / 8)) * 8;
    Pack<bf16> p;
    if (row0 + r < n) {
      p = load_pack(src + (long long)(row0 + r) * stride + c);
    } else {
#pragma unroll
      for (int k = 0; k < 8; k++) p.v[k] = __float2bfloat16(0.f);
    }
    store_pack(dst + r * WA_LDH + c, p);
  }
}

// Tensor-core forward, head size 64: flash-attention-2 style with the accumulators in registers (mma.sync
// m16n8k16 bf16, f32 accumulation; common.cuh's mma_bf16_16816 and its fragment layout).
// Block: 4 warps, 64 query rows (16 per warp) of query head h, the heaviest (last) query tiles first; key/value
// tiles of 64 rows of kv head g = h / (NH / NKV) staged in shared memory (bf16, row stride WA_LDH).
// Lane (gq, t4) = (lane / 4, lane % 4) owns rows gq and gq + 8 of its warp's 16: per key tile it computes
// S = Q K^T (8 blocks of 8 keys, s[n][0..1] at row gq, keys 8n + 2 t4 + {0, 1}; s[n][2..3] the same at row gq + 8),
// scales and masks it (causal: key j <= pos0 + query row), takes the row max over the tile (the 4 lanes of a row
// exchange theirs), rescales O and its own part of the running sum l by exp(m_old - m_new), and adds P V with
// P = exp(S - m_new) rounded to bf16: the accumulator layout of two S blocks is the A-operand layout of 16 keys,
// so P never leaves the registers. Epilogue: l summed over the row's 4 lanes; out = O / l, lse = m + log l.
// Shared memory: WA_SMEM (27648) bytes: Q, K, V tiles (WA_OFF_K, WA_OFF_V; geometry.cuh, kernels/geometry.rs).
extern "C" __global__ void __launch_bounds__(32 * WA_WARPS)
    attention_forward_mma_bf16(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q_src,
                               const bf16* __restrict__ kv, const unsigned* __restrict__ pos0, int Tq, int Tk, int NH,
                               int NKV, int C) {
  RLHF_DYN_SMEM(unsigned char, sm);
  bf16* Qs = reinterpret_cast<bf16*>(sm);
  bf16* Ks = reinterpret_cast<bf16*>(sm + WA_OFF_K);
  bf16* Vs = reinterpret_cast<bf16*>(sm + WA_OFF_V);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, gq = lane / 4, t4 = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z, q0 = (gridDim.x - 1 - blockIdx.x) * WA_Q, g = h / (NH / NKV);
  const long long W = C + 2LL * NKV * WA_D;
  const float scale = 0.125f;  // 1/sqrt(64)
  const int p0 = (int)pos0[b];
  const bf16* kbase = kv + (long long)b * Tk * W + C + g * WA_D;

  wb_stage(Qs, q_src + (long long)b * Tq * W + h * WA_D, W, q0, Tq);
  __syncthreads();
  // The warp's Q rows as A operands: 4 chunks of 16 head dims.
  unsigned qa[WA_D / 16][4];
  const bf16* qw = Qs + warp * 16 * WA_LDH;
#pragma unroll
  for (int kc = 0; kc < WA_D / 16; kc++) {
    qa[kc][0] = load_bf16x2(qw + gq * WA_LDH + kc * 16 + 2 * t4);
    qa[kc][1] = load_bf16x2(qw + (gq + 8) * WA_LDH + kc * 16 + 2 * t4);
    qa[kc][2] = load_bf16x2(qw + gq * WA_LDH + kc * 16 + 8 + 2 * t4);
    qa[kc][3] = load_bf16x2(qw + (gq + 8) * WA_LDH + kc * 16 + 8 + 2 * t4);
  }
  float o[WA_D / 8][4];
#pragma unroll
  for (int n = 0; n < WA_D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows gq, gq + 8 (l: this lane's keys only)
  const int pabs0 = p0 + q0 + warp * 16 + gq;               // absolute position of row gq (row gq + 8: + 8)
  const int last_q = min(q0 + WA_Q, Tq) - 1;
  const int nkeys = min(p0 + last_q + 1, Tk);
  for (int k0 = 0; k0 < nkeys; k0 += WA_K) {
    __syncthreads();  // Q fragments loaded; previous tile's K/V no longer read
    wb_stage(Ks, kbase + (long long)k0 * W, W, 0, Tk - k0);
    wb_stage(Vs, kbase + (long long)k0 * W + NKV * WA_D, W, 0, Tk - k0);
    __syncthreads();
    // S = Q K^T: B operand of key block n = K rows 8n + gq, head dims 2 t4 (+ 8) of chunk kc.
    float s[WA_K / 8][4];
#pragma unroll
    for (int n = 0; n < WA_K / 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const bf16* krow = Ks + (n * 8 + gq) * WA_LDH + 2 * t4;
#pragma unroll
      for (int kc = 0; kc < WA_D / 16; kc++) {
        const unsigned kb[2] = {load_bf16x2(krow + kc * 16), load_bf16x2(krow + kc * 16 + 8)};
        mma_bf16_16816(s[n], qa[kc], kb);
      }
    }
    // Scale, causal mask, online softmax per row (i = 0: row gq, i = 1: row gq + 8).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < WA_K / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int j = k0 + n * 8 + 2 * t4 + (e & 1), i = e >> 1;
        s[n][e] = (j <= pabs0 + 8 * i && j < Tk) ? s[n][e] * scale : -INFINITY;
        mx[i] = fmaxf(mx[i], s[n][e]);
      }
    float corr[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
      mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
      const float m_new = fmaxf(m[i], mx[i]);  // finite: key 0 is visible to every row
      corr[i] = __expf(m[i] - m_new);
      m[i] = m_new;
      l[i] *= corr[i];
    }
#pragma unroll
    for (int n = 0; n < WA_D / 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) o[n][e] *= corr[e >> 1];
    // O += P V, 16 keys at a time: A = two S blocks as probabilities (bf16), B = V rows 16 kc + 2 t4 (+ 1,
    // + 8, + 9), head dim 8 n + gq.
#pragma unroll
    for (int kc = 0; kc < WA_K / 16; kc++) {
      unsigned pa[4];
#pragma unroll
      for (int half = 0; half < 2; half++) {
        float* sb = s[2 * kc + half];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          sb[e] = __expf(sb[e] - m[e >> 1]);
          l[e >> 1] += sb[e];
        }
        pa[2 * half] = bf16x2(__float2bfloat16_rn(sb[0]), __float2bfloat16_rn(sb[1]));
        pa[2 * half + 1] = bf16x2(__float2bfloat16_rn(sb[2]), __float2bfloat16_rn(sb[3]));
      }
      const bf16* vrow = Vs + (kc * 16 + 2 * t4) * WA_LDH + gq;
#pragma unroll
      for (int n = 0; n < WA_D / 8; n++) {
        const bf16* v = vrow + n * 8;
        const unsigned vb[2] = {bf16x2(v[0], v[WA_LDH]), bf16x2(v[8 * WA_LDH], v[9 * WA_LDH])};
        mma_bf16_16816(o[n], pa, vb);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 2; i++) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    const int t = q0 + warp * 16 + gq + 8 * i;
    if (t < Tq) {
      bf16* orow = out + ((long long)b * Tq + t) * C + h * WA_D + 2 * t4;
#pragma unroll
      for (int n = 0; n < WA_D / 8; n++) {
        orow[n * 8] = __float2bfloat16_rn(o[n][2 * i] / l[i]);
        orow[n * 8 + 1] = __float2bfloat16_rn(o[n][2 * i + 1] / l[i]);
      }
      if (t4 == 0) lse[((long long)b * NH + h) * Tq + t] = m[i] + logf(l[i]);
    }
  }
}
RLHF_EXPORT(attention_forward_mma_bf16)

// ---------------------------------------------------------------------------------------------------------
// Tensor-core backward (WMMA, bf16 inputs, f32 accumulation), head size 64, training form; same contract and
// the same two-kernel split as the CUDA-core backward (no atomics, fixed summation order: deterministic).
// Both kernels: 4 warps, 64-row tiles (16 rows per warp), tiles of q, k, v, dout staged in shared memory as
// bf16 (row stride WA_LDH); S and dP of a warp go through shared memory in f32 because the element-wise
// step needs each element's row and column (a fragment's element mapping is unspecified); P and dS are
// rounded to bf16 in shared memory to feed the next products. Element-wise work: lane owns columns lane and
// lane + 32 of the warp's 16 x 64 tile, so shared-memory accesses are conflict-free.
//
// attention_backward_dq_wmma_bf16: block = 64 queries (heaviest tiles first), loops over key tiles up to the
// diagonal. D_t = dout_t . out_t (f32, written to Dbuf [B,NH,T] for the dkv kernel);
//   S = Q_w K^T, dP = dO_w V^T (WMMA), P = exp(S / 8 - lse) (causal), dS = P (dP - D) (bf16),
//   dQ_w += dS K (WMMA, 4 accumulator fragments in registers); dq = dQ / 8.
// attention_backward_dkv_wmma_bf16: block = 64 keys of kv head g, loops over g's query heads in order and over
// each one's query tiles from the diagonal on; each warp works on the transposed tiles of its 16 keys:
//   S^T = K_w Q^T, dP^T = V_w dO^T (Q^T, dO^T: col_major loads), P^T, dS^T element-wise (lse, D per column),
//   dV_w += P^T dO, dK_w += dS^T Q (8 accumulator fragments in registers); dk = dK / 8, dv = dV.
// On the diagonal tile, 16-wide sub-tiles that the causal mask empties for a warp are skipped. Padding rows and
// columns (t, i >= Tn; zero-staged) are computed like the others and never stored, and a masked sub-tile
// holds only zeros or unread scores: bounds that only exclude them are equivalent mutants one off
// (kernels/mutants-allowed.txt), as are the forward's padding query rows and the key tile past nkeys.
// Dynamic shared memory: dq WBQ_SMEM (81408) bytes, dkv WBK_SMEM (90112) bytes.
// Layouts (geometry.cuh, from kernels/geometry.rs): dq: Q, dO, K, V tiles, then S, dP (f32), dS (bf16), L, D
// (WBQ_OFF_*, WBQ_SMEM); dkv: K, V, Q, dO tiles, then S^T, dP^T (f32), P^T, dS^T (bf16) (WBK_OFF_*, WBK_SMEM).

// One warp: acc (16 x 64 f32, row-major, stride WA_LDF) = A (16 x 64 bf16, row-major) B^T, where B is a
// 64 x 64 bf16 row-major tile read as col_major; only the 16-column blocks n0 <= n < n1 are computed.
__device__ __forceinline__ void wb_abt(float* acc, const bf16* a, const bf16* bt, int n0, int n1) {
  using namespace nvcuda;
#pragma unroll
  for (int n = 0; n < 4; n++) {
    if (n < n0 || n >= n1) continue;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
    wmma::fill_fragment(s, 0.f);
#pragma unroll
    for (int kk = 0; kk < WA_D / 16; kk++) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
      wmma::load_matrix_sync(fa, a + kk * 16, WA_LDH);
      wmma::load_matrix_sync(fb, bt + n * 16 * WA_LDH + kk * 16, WA_LDH);
      wmma::mma_sync(s, fa, fb, s);
    }
    wmma::store_matrix_sync(acc + n * 16, s, WA_LDF, wmma::mem_row_major);
  }
}

typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> wb_acc;

// One warp: acc[n] (16 x 16 column block n of a 16 x 64 f32 product) += A (16 x 64 bf16, row-major) B (64 x 64
// bf16 row-major); only the 16-row blocks kk0 <= kk < kk1 of B (columns of A) contribute.
__device__ __forceinline__ void wb_ab(wb_acc* acc, const bf16* a, const bf16* b, int kk0, int kk1) {
  using namespace nvcuda;
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    if (kk < kk0 || kk >= kk1) continue;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::load_matrix_sync(fa, a + kk * 16, WA_LDH);
#pragma unroll
    for (int n = 0; n < WA_D / 16; n++) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * WA_LDH + n * 16, WA_LDH);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// One warp: write acc * mul (16 x 64) as bf16 to rows row0 .. row0+15 (those < n) of dst (row stride `stride`),
// through the warp's f32 staging tile st.
__device__ __forceinline__ void wb_write(bf16* __restrict__ dst, long long stride, int row0, int n, wb_acc* acc,
                                         float mul, float* st) {
  using namespace nvcuda;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int k = 0; k < WA_D / 16; k++) wmma::store_matrix_sync(st + k * 16, acc[k], WA_LDF, wmma::mem_row_major);
  __syncwarp();
  for (int i = lane; i < 16 * (WA_D / 8); i += 32) {
    const int r = i / (WA_D / 8), c = (i % (WA_D / 8)) * 8;
    if (row0 + r >= n) continue;
    Pack<bf16> p;
#pragma unroll
    for (int k = 0; k < 8; k++) p.v[k] = __float2bfloat16_rn(st[r * WA_LDF + c + k] * mul);
    store_pack(dst + (long long)(row0 + r) * stride + c, p);
  }
  // The staging tile's reads are done before a next wb_write stores into it. The simulator cannot see this
  // barrier go (its WMMA store is itself a warp-collective step; kernels/mutants-allowed.txt); the GPU orders
  // the lanes' shared-memory accesses only at __syncwarp.
  __syncwarp();
}

extern "C" __global__ void __launch_bounds__(32 * WA_WARPS)
    attention_backward_dq_wmma_bf16(bf16* __restrict__ dqkv, float* __restrict__ Dbuf, const bf16* __restrict__ dout,
                                    const bf16* __restrict__ qkv, const bf16* __restrict__ out,
                                    const float* __restrict__ lse, int Tn, int NH, int NKV, int C) {
  using namespace nvcuda;
  RLHF_DYN_SMEM(unsigned char, sm);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* Qs = reinterpret_cast<bf16*>(sm);
  bf16* dOs = reinterpret_cast<bf16*>(sm + WB_TILE);
  bf16* Ks = reinterpret_cast<bf16*>(sm + 2 * WB_TILE);
  bf16* Vs = reinterpret_cast<bf16*>(sm + 3 * WB_TILE);
  float* Ss = reinterpret_cast<float*>(sm + WBQ_OFF_S) + warp * 16 * WA_LDF;
  float* dPs = reinterpret_cast<float*>(sm + WBQ_OFF_DP) + warp * 16 * WA_LDF;
  bf16* dSs = reinterpret_cast<bf16*>(sm + WBQ_OFF_DS) + warp * 16 * WA_LDH;
  float* Lr = reinterpret_cast<float*>(sm + WBQ_OFF_L) + warp * 16;  // lse per row of the warp
  float* Dr = Lr + WB_T;                                             // D per row of the warp
  const int qt = gridDim.x - 1 - blockIdx.x;  // longest key loops first
  const int h = blockIdx.y, b = blockIdx.z, q0 = qt * WB_T, r0 = q0 + warp * 16, g = h / (NH / NKV);
  const long long W = C + 2LL * NKV * WA_D;
  const float scale = 0.125f;  // 1/sqrt(64)
  const bf16* base = qkv + (long long)b * Tn * W;
  const bf16* kbase = base + C + g * WA_D;
  const long long bh = ((long long)b * NH + h) * Tn;

  wb_stage(Qs, base + h * WA_D, W, q0, Tn);
  wb_stage(dOs, dout + (long long)b * Tn * C + h * WA_D, C, q0, Tn);
  __syncthreads();
  {  // D = dout . out and lse for the warp's rows: 2 lanes per row, 32 dims each
    const int r = lane / 2, half = lane % 2, t = r0 + r;
    float dd = 0.f;
    if (t < Tn) {
      const bf16* orow = out + ((long long)b * Tn + t) * C + h * WA_D + half * 32;
      const bf16* grow = dOs + (warp * 16 + r) * WA_LDH + half * 32;
      for (int c = 0; c < 32; c += 8) {
        const Pack<bf16> o = load_pack(orow + c);
#pragma unroll
        for (int k = 0; k < 8; k++) dd += __bfloat162float(grow[c + k]) * __bfloat162float(o.v[k]);
      }
    }
    dd += __shfl_xor_sync(0xffffffffu, dd, 1);
    if (half == 0) {
      Dr[r] = dd;
      Lr[r] = t < Tn ? lse[bh + t] : 0.f;
      if (t < Tn) Dbuf[bh + t] = dd;
    }
  }
  // No __syncwarp needed before the other lanes read Dr, Lr: the key-tile loop below runs at least once
  // (k0 = 0 <= q0) and opens with a __syncthreads, which orders these writes before every read.

  wb_acc dq[WA_D / 16];
#pragma unroll
  for (int n = 0; n < WA_D / 16; n++) wmma::fill_fragment(dq[n], 0.f);
  for (int k0 = 0; k0 <= q0; k0 += WB_T) {
    __syncthreads();  // D, L written; previous tile's K/V no longer read
    wb_stage(Ks, kbase, W, k0, Tn);
    wb_stage(Vs, kbase + NKV * WA_D, W, k0, Tn);
    __syncthreads();
    const int nk = k0 == q0 ? warp + 1 : 4;  // 16-key blocks with any key <= the warp's last query
    wb_abt(Ss, Qs + warp * 16 * WA_LDH, Ks, 0, nk);
    wb_abt(dPs, dOs + warp * 16 * WA_LDH, Vs, 0, nk);
    __syncwarp();
    for (int r = 0; r < 16; r++) {
      const int t = r0 + r;
      const float L = Lr[r], D = Dr[r];
#pragma unroll
      for (int hc = 0; hc < 2; hc++) {
        const int c = lane + 32 * hc, j = k0 + c;
        float ds = 0.f;
        if (t < Tn && j <= t) ds = __expf(Ss[r * WA_LDF + c] * scale - L) * (dPs[r * WA_LDF + c] - D);
        dSs[r * WA_LDH + c] = __float2bfloat16_rn(ds);
      }
    }
    __syncwarp();
    wb_ab(dq, dSs, Ks, 0, nk);
  }
  wb_write(dqkv + (long long)b * Tn * W + h * WA_D, W, r0, Tn, dq, scale, Ss);
}
RLHF_EXPORT(attention_backward_dq_wmma_bf16)

extern "C" __global__ void __launch_bounds__(32 * WA_WARPS)
    attention_backward_dkv_wmma_bf16(bf16* __restrict__ dqkv, const float* __restrict__ Dbuf,
                                     const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                                     const float* __restrict__ lse, int Tn, int NH, int NKV, int C) {
  using namespace nvcuda;
  RLHF_DYN_SMEM(unsigned char, sm);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* Ks = reinterpret_cast<bf16*>(sm);
  bf16* Vs = reinterpret_cast<bf16*>(sm + WB_TILE);
  bf16* Qs = reinterpret_cast<bf16*>(sm + 2 * WB_TILE);
  bf16* dOs = reinterpret_cast<bf16*>(sm + 3 * WB_TILE);
  float* Ss = reinterpret_cast<float*>(sm + WBK_OFF_S) + warp * 16 * WA_LDF;
  float* dPs = reinterpret_cast<float*>(sm + WBK_OFF_DP) + warp * 16 * WA_LDF;
  bf16* Ps = reinterpret_cast<bf16*>(sm + WBK_OFF_P) + warp * 16 * WA_LDH;
  bf16* dSs = reinterpret_cast<bf16*>(sm + WBK_OFF_DS) + warp * 16 * WA_LDH;
  const int g = blockIdx.y, b = blockIdx.z, k0 = blockIdx.x * WB_T, j0 = k0 + warp * 16, G = NH / NKV;
  const long long W = C + 2LL * NKV * WA_D;
  const float scale = 0.125f;  // 1/sqrt(64)
  const bf16* base = qkv + (long long)b * Tn * W;
  bf16* dkr = dqkv + (long long)b * Tn * W + C + g * WA_D;  // dk of kv head g; its dv NKV heads on

  wb_stage(Ks, base + C + g * WA_D, W, k0, Tn);
  wb_stage(Vs, base + C + (NKV + g) * WA_D, W, k0, Tn);
  wb_acc dk[WA_D / 16], dv[WA_D / 16];
#pragma unroll
  for (int n = 0; n < WA_D / 16; n++) {
    wmma::fill_fragment(dk[n], 0.f);
    wmma::fill_fragment(dv[n], 0.f);
  }
  for (int h = g * G; h < g * G + G; h++) {  // kv head g's query heads, in order
    const bf16* qbase = base + h * WA_D;
    const bf16* gbase = dout + (long long)b * Tn * C + h * WA_D;
    const float* Lb = lse + ((long long)b * NH + h) * Tn;
    const float* Db = Dbuf + ((long long)b * NH + h) * Tn;
    for (int q0 = k0; q0 < Tn; q0 += WB_T) {
      __syncthreads();  // K/V staged; previous tile's Q/dO no longer read
      wb_stage(Qs, qbase, W, q0, Tn);
      wb_stage(dOs, gbase, C, q0, Tn);
      __syncthreads();
      const int nq = q0 == k0 ? warp : 0;  // 16-query blocks below it hold no query >= the warp's first key
      wb_abt(Ss, Ks + warp * 16 * WA_LDH, Qs, nq, 4);
      wb_abt(dPs, Vs + warp * 16 * WA_LDH, dOs, nq, 4);
      __syncwarp();
#pragma unroll
      for (int hc = 0; hc < 2; hc++) {
        const int c = lane + 32 * hc, i = q0 + c;
        const float L = i < Tn ? Lb[i] : 0.f, D = i < Tn ? Db[i] : 0.f;
        for (int r = 0; r < 16; r++) {
          float p = 0.f, ds = 0.f;
          if (i < Tn && i >= j0 + r) {
            p = __expf(Ss[r * WA_LDF + c] * scale - L);
            ds = p * (dPs[r * WA_LDF + c] - D);
          }
          Ps[r * WA_LDH + c] = __float2bfloat16_rn(p);
          dSs[r * WA_LDH + c] = __float2bfloat16_rn(ds);
        }
      }
      __syncwarp();
      wb_ab(dv, Ps, dOs, nq, 4);
      wb_ab(dk, dSs, Qs, nq, 4);
    }
  }
  wb_write(dkr, W, j0, Tn, dk, scale, Ss);
  wb_write(dkr + NKV * WA_D, W, j0, Tn, dv, 1.f, Ss);
}
RLHF_EXPORT(attention_backward_dkv_wmma_bf16)
