// Entropy of the temperature-scaled softmax of each logits row, and its gradient (PPO's entropy bonus and
// statistic; contract of crate::ops::entropy). Row i, z = inv_temp * logits[i, 0..V], p = softmax(z):
//   ent[i] = H_i = logsumexp(z) - sum_j p_j z_j
//   if want_grad: dlogits[i, j] = -coef[i] * inv_temp * p_j * (log p_j + H_i)  (j < V), 0 (V <= j < Vp)
// Shapes: logits, dlogits [N, Vp] (storage T); ent, coef [N] f32. dlogits is not touched without want_grad.
// One 256-thread block per row: pass 1 the logsumexp (block_row_logsumexp in common.cuh), pass 2 the block
// sum of p_j z_j, pass 3 (with want_grad) the gradient row. Rows move in 16-byte chunks when Vp is a
// multiple of the pack (pointers then 16-byte aligned: checked at launch).
#include "common.cuh"

template <class T, int W>
__device__ void entropy_forward_backward(float* __restrict__ ent, T* __restrict__ dlogits, const T* __restrict__ logits,
                                         const float* __restrict__ coef, int V, int Vp, float inv_temp, int want_grad) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const T* x = logits + row * Vp;
  const float lse = block_row_logsumexp<T, W>(x, V, inv_temp, scratch);
  float pz = 0.f;
  for_row_scaled<T, W>(x, V, inv_temp, [&](float z) { pz += __expf(z - lse) * z; });
  const float H = lse - block_sum(pz, scratch);
  if (threadIdx.x == 0) ent[row] = H;
  if (!want_grad) return;
  const float cf = -coef[row] * inv_temp;
  T* d = dlogits + row * Vp;
  for (int c = threadIdx.x * W; c < Vp; c += blockDim.x * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(x + c);
    Chunk<T, W> dc;
#pragma unroll
    for (int k = 0; k < W; k++) {
      float g = 0.f;
      if (c + k < V) {
        const float logp = inv_temp * to_f32(xc.v[k]) - lse;
        g = cf * __expf(logp) * (logp + H);
      }
      dc.v[k] = from_f32<T>(g);
    }
    store_chunk<T, W>(d + c, dc);
  }
}

#define ENTROPY_INSTANTIATE(T, sfx)                                                                              \
  extern "C" __global__ void entropy_##sfx(float* __restrict__ ent, T* __restrict__ dlogits,                   \
                                           const T* __restrict__ logits, const float* __restrict__ coef, int V, \
                                           int Vp, float inv_temp, int want_grad) {                             \
    RLHF_CHUNK_DISPATCH(T, Vp, (entropy_forward_backward<T, W>(ent, dlogits, logits, coef, V, Vp, inv_temp, want_grad))) \
  }                                                                                                              \
  RLHF_EXPORT(entropy_##sfx)

ENTROPY_INSTANTIATE(float, f32)
ENTROPY_INSTANTIATE(bf16, bf16)
