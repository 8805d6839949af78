// Fused softmax + cross-entropy; the probabilities are never written.
// Row i, z = inv_temp * logits[i, 0..V]:
//   losses[i] = logsumexp(z) - z[target_i]
//   if want_grad: logits[i, j] = weights[i] * inv_temp * (softmax(z)_j - [j == target_i])  (j < V), 0 (V <= j < Vp)
// Shapes: logits [N, Vp] (storage T), targets [N] u32, weights/losses [N] f32.
// One 256-thread block per row: pass 1 the logsumexp (block_row_logsumexp in common.cuh: a per-thread online
// (max, sum) combined across the block); pass 2 (with want_grad) rewrites the row in place. Rows move in
// 16-byte chunks when Vp is a multiple of the pack (the row pointer is then 16-byte aligned; checked by the
// launch layer).
#include "common.cuh"

template <class T, int W>
__device__ void crossentropy_forward_backward(float* __restrict__ losses, T* __restrict__ logits,
                                              const unsigned* __restrict__ targets, const float* __restrict__ weights,
                                              int V, int Vp, float inv_temp, int want_grad) {
  __shared__ float scratch[32];
  const long long row = blockIdx.x;
  T* x = logits + row * Vp;
  const float lse = block_row_logsumexp<T, W>(x, V, inv_temp, scratch);
  const unsigned tgt = targets[row];
  // Every thread reads the target logit before any thread overwrites the row.
  const float zt = inv_temp * to_f32(x[tgt]);
  if (threadIdx.x == 0) losses[row] = lse - zt;
  if (!want_grad) return;
  __syncthreads();
  const float w = weights[row] * inv_temp;
  for (int c = threadIdx.x * W; c < Vp; c += blockDim.x * W) {
    Chunk<T, W> xc = load_chunk<T, W>(x + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      const int j = c + k;
      float g = 0.f;
      if (j < V) g = w * (__expf(inv_temp * to_f32(xc.v[k]) - lse) - (j == (int)tgt ? 1.f : 0.f));
      xc.v[k] = from_f32<T>(g);
    }
    store_chunk<T, W>(x + c, xc);
  }
}

#define CE_INSTANTIATE(T, sfx)                                                                                 \
  extern "C" __global__ void crossentropy_##sfx(float* __restrict__ losses, T* __restrict__ logits,            \
                                                const unsigned* __restrict__ targets,                          \
                                                const float* __restrict__ weights, int V, int Vp,              \
                                                float inv_temp, int want_grad) {                               \
    RLHF_CHUNK_DISPATCH(T, Vp, (crossentropy_forward_backward<T, W>(losses, logits, targets, weights, V, Vp, inv_temp, want_grad))) \
  }                                                                                                            \
  RLHF_EXPORT(crossentropy_##sfx)

CE_INSTANTIATE(float, f32)
CE_INSTANTIATE(bf16, bf16)
