// Fused causal multi-head attention (flash style: online softmax, the T x T scores never leave the chip;
// only the log-sum-exp per query is saved for the backward).
//
// Forward, row b, head h, query t at absolute position p = pos0[b] + t, keys j = 0..min(p, Tk-1):
//   s_j = (q_t . k_j) / sqrt(HS);  lse[b,h,t] = log sum_j exp(s_j);  out[b,t,h*HS+d] = sum_j exp(s_j - lse) v_j[d]
//   q from q_src[B,Tq,3C] columns 0..C; k, v from kv[B,Tk,3C] columns C..2C, 2C..3C; lse f32.
// Backward (training form: kv = q_src = qkv, Tq = Tk = T, pos0 = 0), D_t = dout_t . out_t, P = exp(s - lse):
//   dP_tj = dout_t . v_j;  dS_tj = P_tj (dP_tj - D_t)
//   dq_t = sum_j dS_tj k_j / sqrt(HS)          (attention_backward_dq: warp per query row; also writes D)
//   dk_j = sum_t dS_tj q_t / sqrt(HS);  dv_j = sum_t P_tj dout_t     (attention_backward_dkv: warp per key row)
//   dqkv [B,T,3C] is overwritten; no atomics, fixed summation order (deterministic).
//
// Layout of the work: one warp per (b, h, row), 4 warps per block; grid (ceil(rows/4), NH, B). Within a warp,
// each lane takes one of 32 keys (or queries) at a time and computes its full dot product from the row vector
// staged in shared memory; the 32 probabilities are broadcast through shared memory for the weighted sums,
// where each lane owns head dims d = lane + 32k (k < KPL, HS <= 32 * KPL).
// Dynamic shared memory per warp (floats): forward HS + 32, backward_dq 2 HS + 32, backward_dkv 2 HS + 64.
//
// These kernels use CUDA cores (FFMA). attention_forward_wmma_bf16 (bottom) is the tensor-core forward for
// bf16 with head size 64; the backward has no tensor-core variant yet.
#include "common.cuh"

#define ATT_WARPS 4

template <class T, int KPL>
__device__ void attention_forward(T* __restrict__ out, float* __restrict__ lse, const T* __restrict__ q_src,
                                  const T* __restrict__ kv, const unsigned* __restrict__ pos0, int Tq, int Tk, int NH,
                                  int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int t = blockIdx.x * ATT_WARPS + warp, h = blockIdx.y, b = blockIdx.z;
  if (t >= Tq) return;
  float* qs = smem + warp * (HS + 32);
  float* ps = qs + HS;
  const float scale = rsqrtf((float)HS);
  const long long C3 = 3LL * C;
  const T* qrow = q_src + ((long long)b * Tq + t) * C3 + h * HS;
  const T* kbase = kv + (long long)b * Tk * C3 + C + h * HS;
  const T* vbase = kv + (long long)b * Tk * C3 + 2 * C + h * HS;
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
      const T* kr = kbase + (long long)j * C3;
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
        for (int jj = 0; jj < nj; jj++) a += ps[jj] * to_f32(vbase[(long long)(j0 + jj) * C3 + d]);
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
                                      const float* __restrict__ lse, int Tn, int NH, int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int t = blockIdx.x * ATT_WARPS + warp, h = blockIdx.y, b = blockIdx.z;
  if (t >= Tn) return;
  float* qs = smem + warp * (2 * HS + 32);
  float* dos = qs + HS;
  float* ps = dos + HS;
  const float scale = rsqrtf((float)HS);
  const long long C3 = 3LL * C;
  const T* base = qkv + (long long)b * Tn * C3;
  const long long rowo = ((long long)b * Tn + t) * C + h * HS;
  float dd = 0.f;
  for (int d = lane; d < HS; d += 32) {
    qs[d] = to_f32(base[t * C3 + h * HS + d]) * scale;
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
      const T* kr = base + (long long)j * C3 + C + h * HS;
      const T* vr = base + (long long)j * C3 + 2 * C + h * HS;
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
        for (int jj = 0; jj < nj; jj++) acc[k] += ps[jj] * to_f32(base[(long long)(j0 + jj) * C3 + C + h * HS + d]);
    }
    __syncwarp();
  }
  T* dq = dqkv + ((long long)b * Tn + t) * C3 + h * HS;
#pragma unroll
  for (int k = 0; k < KPL; k++) {
    const int d = lane + 32 * k;
    if (d < HS) dq[d] = from_f32<T>(acc[k] * scale);
  }
}

template <class T, int KPL>
__device__ void attention_backward_dkv(T* __restrict__ dqkv, const float* __restrict__ Dbuf, const T* __restrict__ dout,
                                       const T* __restrict__ qkv, const float* __restrict__ lse, int Tn, int NH,
                                       int C) {
  RLHF_DYN_SMEM(float, smem);
  const int HS = C / NH;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int j = blockIdx.x * ATT_WARPS + warp, h = blockIdx.y, b = blockIdx.z;
  if (j >= Tn) return;
  float* ks = smem + warp * (2 * HS + 64);
  float* vs = ks + HS;
  float* ps = vs + HS;
  float* dss = ps + 32;
  const float scale = rsqrtf((float)HS);
  const long long C3 = 3LL * C;
  const T* base = qkv + (long long)b * Tn * C3;
  const float* Lb = lse + ((long long)b * NH + h) * Tn;
  const float* Db = Dbuf + ((long long)b * NH + h) * Tn;
  for (int d = lane; d < HS; d += 32) {
    ks[d] = to_f32(base[(long long)j * C3 + C + h * HS + d]) * scale;
    vs[d] = to_f32(base[(long long)j * C3 + 2 * C + h * HS + d]);
  }
  __syncwarp();
  float dk[KPL], dv[KPL];
#pragma unroll
  for (int k = 0; k < KPL; k++) dk[k] = dv[k] = 0.f;
  for (int i0 = j; i0 < Tn; i0 += 32) {
    const int i = i0 + lane;
    float p = 0.f, ds = 0.f;
    if (i < Tn) {
      const T* qr = base + (long long)i * C3 + h * HS;
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
          dk[k] += dss[ii] * to_f32(qkv[r * C3 + h * HS + d]);
        }
    }
    __syncwarp();
  }
  T* dkr = dqkv + ((long long)b * Tn + j) * C3 + C + h * HS;
  T* dvr = dkr + C;
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
      const unsigned* __restrict__ pos0, int Tq, int Tk, int NH, int C) {                                     \
    attention_forward<T, KPL>(out, lse, q_src, kv, pos0, Tq, Tk, NH, C);                                      \
  }                                                                                                           \
  RLHF_EXPORT(attention_forward_hs##KPL##_##sfx)                                                              \
  extern "C" __global__ void attention_backward_dq_hs##KPL##_##sfx(                                           \
      T* __restrict__ dqkv, float* __restrict__ Dbuf, const T* __restrict__ dout, const T* __restrict__ qkv,   \
      const T* __restrict__ out, const float* __restrict__ lse, int Tn, int NH, int C) {                      \
    attention_backward_dq<T, KPL>(dqkv, Dbuf, dout, qkv, out, lse, Tn, NH, C);                                \
  }                                                                                                           \
  RLHF_EXPORT(attention_backward_dq_hs##KPL##_##sfx)                                                          \
  extern "C" __global__ void attention_backward_dkv_hs##KPL##_##sfx(                                          \
      T* __restrict__ dqkv, const float* __restrict__ Dbuf, const T* __restrict__ dout,                       \
      const T* __restrict__ qkv, const float* __restrict__ lse, int Tn, int NH, int C) {                      \
    attention_backward_dkv<T, KPL>(dqkv, Dbuf, dout, qkv, lse, Tn, NH, C);                                    \
  }                                                                                                           \
  RLHF_EXPORT(attention_backward_dkv_hs##KPL##_##sfx)

#define ATT_INST(T, sfx) ATT_INST_K(T, sfx, 1) ATT_INST_K(T, sfx, 2) ATT_INST_K(T, sfx, 4)
ATT_INST(float, f32)
ATT_INST(bf16, bf16)

// ---------------------------------------------------------------------------------------------------------
// Tensor-core forward (WMMA, bf16 inputs, f32 accumulation), head size 64: flash-attention-2 style.
// Block: 4 warps, 64 query rows (16 per warp); key/value tiles of 64 rows staged in shared memory.
// Per key tile each warp computes S = Q_w K^T (16 x 64, f32) with WMMA, applies scale and the causal mask,
// updates the running row max / sum (2 lanes per row), writes P (bf16) and rescales its O accumulator
// (16 x 64 f32, kept in shared memory because a fragment's element-to-row mapping is unspecified), then
// O += P V with WMMA. Epilogue: out = O / l, lse = m + log l.
// Dynamic shared memory: 72448 bytes (above the 48 KiB default: the device launcher opts in).
#define WA_Q 64
#define WA_K 64
#define WA_D 64
#define WA_LDH 72  // bf16 row stride (pad 8: 16 bytes)
#define WA_LDF 68  // f32 row stride (pad 4: 16 bytes)
#define WA_OFF_K (WA_Q * WA_LDH * 2)
#define WA_OFF_V (WA_OFF_K + WA_K * WA_LDH * 2)
#define WA_OFF_S (WA_OFF_V + WA_K * WA_LDH * 2)
#define WA_OFF_P (WA_OFF_S + 4 * 16 * WA_LDF * 4)
#define WA_OFF_O (WA_OFF_P + 4 * 16 * WA_LDH * 2)
#define WA_OFF_M (WA_OFF_O + 4 * 16 * WA_LDF * 4)
#define WA_SMEM (WA_OFF_M + 3 * 4 * 16 * 4)

extern "C" __global__ void __launch_bounds__(128)
    attention_forward_wmma_bf16(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q_src,
                                const bf16* __restrict__ kv, const unsigned* __restrict__ pos0, int Tq, int Tk, int NH,
                                int C) {
  using namespace nvcuda;
  RLHF_DYN_SMEM(unsigned char, sm);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  bf16* Qs = reinterpret_cast<bf16*>(sm);
  bf16* Ks = reinterpret_cast<bf16*>(sm + WA_OFF_K);
  bf16* Vs = reinterpret_cast<bf16*>(sm + WA_OFF_V);
  float* Ss = reinterpret_cast<float*>(sm + WA_OFF_S) + warp * 16 * WA_LDF;
  bf16* Ps = reinterpret_cast<bf16*>(sm + WA_OFF_P) + warp * 16 * WA_LDH;
  float* Os = reinterpret_cast<float*>(sm + WA_OFF_O) + warp * 16 * WA_LDF;
  float* Ms = reinterpret_cast<float*>(sm + WA_OFF_M) + warp * 16;  // running max per row
  float* Ls = Ms + 64;                                               // running sum per row
  float* Cs = Ms + 128;                                              // this tile's rescale factor per row
  const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * WA_Q;
  const long long C3 = 3LL * C;
  const float scale = 0.125f;  // 1/sqrt(64)
  const int p0 = (int)pos0[b];
  const bf16 zero = __float2bfloat16(0.f);

  for (int i = threadIdx.x; i < WA_Q * WA_D; i += blockDim.x) {
    const int r = i / WA_D, d = i % WA_D, t = q0 + r;
    Qs[r * WA_LDH + d] = t < Tq ? q_src[((long long)b * Tq + t) * C3 + h * WA_D + d] : zero;
  }
  for (int i = lane; i < 16 * WA_D; i += 32) Os[(i / WA_D) * WA_LDF + i % WA_D] = 0.f;
  if (lane < 16) {
    Ms[lane] = -INFINITY;
    Ls[lane] = 0.f;
  }
  const int last_q = min(q0 + WA_Q, Tq) - 1;
  const int nkeys = min(p0 + last_q + 1, Tk);
  for (int k0 = 0; k0 < nkeys; k0 += WA_K) {
    __syncthreads();  // Q staged; previous tile's K/V no longer read
    for (int i = threadIdx.x; i < WA_K * WA_D; i += blockDim.x) {
      const int r = i / WA_D, d = i % WA_D, j = k0 + r;
      bf16 kx = zero, vx = zero;
      if (j < Tk) {
        const long long row = ((long long)b * Tk + j) * C3 + h * WA_D + d;
        kx = kv[row + C];
        vx = kv[row + 2 * C];
      }
      Ks[r * WA_LDH + d] = kx;
      Vs[r * WA_LDH + d] = vx;
    }
    __syncthreads();
    // S = Q_w K^T
    for (int n = 0; n < WA_K / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
      wmma::fill_fragment(s, 0.f);
      for (int kk = 0; kk < WA_D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> kt;
        wmma::load_matrix_sync(a, Qs + warp * 16 * WA_LDH + kk * 16, WA_LDH);
        wmma::load_matrix_sync(kt, Ks + n * 16 * WA_LDH + kk * 16, WA_LDH);
        wmma::mma_sync(s, a, kt, s);
      }
      wmma::store_matrix_sync(Ss + n * 16, s, WA_LDF, wmma::mem_row_major);
    }
    __syncwarp();
    {
      const int r = lane / 2, half = lane % 2;
      const int pabs = p0 + q0 + warp * 16 + r;
      float mx = -INFINITY;
      for (int c = half * 32; c < half * 32 + 32; c++) {
        const int j = k0 + c;
        const float sv = (j <= pabs && j < Tk) ? Ss[r * WA_LDF + c] * scale : -INFINITY;
        Ss[r * WA_LDF + c] = sv;
        mx = fmaxf(mx, sv);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_old = Ms[r];
      const float m_new = fmaxf(m_old, mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // a row with no visible key yet (padding rows)
      float sum = 0.f;
      for (int c = half * 32; c < half * 32 + 32; c++) {
        const float pv = __expf(Ss[r * WA_LDF + c] - base);
        Ps[r * WA_LDH + c] = __float2bfloat16_rn(pv);
        sum += pv;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      const float corr = __expf(m_old - base);
      __syncwarp();  // both lanes of the row have read Ms[r]
      if (half == 0) {
        Ms[r] = m_new;
        Ls[r] = Ls[r] * corr + sum;
        Cs[r] = corr;
      }
    }
    __syncwarp();
    for (int i = lane; i < 16 * WA_D; i += 32) Os[(i / WA_D) * WA_LDF + i % WA_D] *= Cs[i / WA_D];
    __syncwarp();
    // O += P V
    for (int n = 0; n < WA_D / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, Os + n * 16, WA_LDF, wmma::mem_row_major);
      for (int kk = 0; kk < WA_K / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> p;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> v;
        wmma::load_matrix_sync(p, Ps + kk * 16, WA_LDH);
        wmma::load_matrix_sync(v, Vs + kk * 16 * WA_LDH + n * 16, WA_LDH);
        wmma::mma_sync(o, p, v, o);
      }
      wmma::store_matrix_sync(Os + n * 16, o, WA_LDF, wmma::mem_row_major);
    }
    __syncwarp();
  }
  for (int i = lane; i < 16 * WA_D; i += 32) {
    const int r = i / WA_D, d = i % WA_D, t = q0 + warp * 16 + r;
    if (t < Tq) out[((long long)b * Tq + t) * C + h * WA_D + d] = __float2bfloat16_rn(Os[r * WA_LDF + d] / Ls[r]);
  }
  if (lane < 16) {
    const int t = q0 + warp * 16 + lane;
    if (t < Tq) lse[((long long)b * NH + h) * Tq + t] = Ms[lane] + logf(Ls[lane]);
  }
}
RLHF_EXPORT(attention_forward_wmma_bf16)
