// Entropy of the temperature-scaled softmax of each logits row, and its gradient (PPO's entropy bonus and
// statistic; contract of crate::ops::entropy). Row i, z = inv_temp * logits[i, 0..V], p = softmax(z):
//   ent[i] = H_i = logsumexp(z) - sum_j p_j z_j
//   if want_grad: dlogits[i, j] = -coef[i] * inv_temp * p_j * (log p_j + H_i)  (j < V), 0 (V <= j < Vp)
// Shapes: logits, dlogits [N, Vp] (storage T); ent, coef [N] f32. dlogits is not touched without want_grad.
// One 256-thread block per row: pass 1 an online (max, sum) per thread combined across the block (the
// logsumexp), pass 2 the block sum of p_j z_j, pass 3 (with want_grad) the gradient row.
#include "common.cuh"

template <class T>
__device__ void entropy_forward_backward(float* __restrict__ ent, T* __restrict__ dlogits, const T* __restrict__ logits,
                                         const float* __restrict__ coef, int V, int Vp, float inv_temp, int want_grad) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  const T* x = logits + row * Vp;
  float m = -INFINITY, s = 0.f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float z = inv_temp * to_f32(x[j]);
    if (z > m) {
      s = s * __expf(m - z) + 1.f;
      m = z;
    } else {
      s += __expf(z - m);
    }
  }
  const float M = block_max(m, scratch);
  const float lse = M + logf(block_sum(m == -INFINITY ? 0.f : s * __expf(m - M), scratch));
  float pz = 0.f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const float z = inv_temp * to_f32(x[j]);
    pz += __expf(z - lse) * z;
  }
  const float H = lse - block_sum(pz, scratch);
  if (threadIdx.x == 0) ent[row] = H;
  if (!want_grad) return;
  const float c = -coef[row] * inv_temp;
  T* d = dlogits + row * Vp;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float g = 0.f;
    if (j < V) {
      const float logp = inv_temp * to_f32(x[j]) - lse;
      g = c * __expf(logp) * (logp + H);
    }
    d[j] = from_f32<T>(g);
  }
}

#define ENTROPY_INSTANTIATE(T, sfx)                                                                              \
  extern "C" __global__ void entropy_##sfx(float* __restrict__ ent, T* __restrict__ dlogits,                   \
                                           const T* __restrict__ logits, const float* __restrict__ coef, int V, \
                                           int Vp, float inv_temp, int want_grad) {                             \
    entropy_forward_backward<T>(ent, dlogits, logits, coef, V, Vp, inv_temp, want_grad);                       \
  }                                                                                                              \
  RLHF_EXPORT(entropy_##sfx)

ENTROPY_INSTANTIATE(float, f32)
ENTROPY_INSTANTIATE(bf16, bf16)
