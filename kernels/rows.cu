// Row gather/scatter: the KV-cache append (each new qkv row to its position in the cache), the gather of the
// rows whose logits are needed, and the compaction of a KV cache to its live rows, each in one launch.
//   for each pair i < N:  dst[d_i * W + j] = src[s_i * W + j]   (j < W; d_i = pairs[2i], s_i = pairs[2i + 1])
// Shapes: pairs [N, 2] u32; dst and src rows of W elements of T (distinct buffers; the destination rows of
// the pairs distinct, so no two blocks write one element). One block of EW_BLOCK threads per pair, striding
// over the row.
#include "common.cuh"

template <class T>
__device__ void rows_copy(T* __restrict__ dst, const T* __restrict__ src, const unsigned* __restrict__ pairs, int W) {
  const long long d = pairs[2 * blockIdx.x], s = pairs[2 * blockIdx.x + 1];
  for (int j = threadIdx.x; j < W; j += blockDim.x) dst[d * W + j] = src[s * W + j];
}

#define ROWS_INSTANTIATE(T, sfx)                                                                            \
  extern "C" __global__ void copy_rows_##sfx(T* __restrict__ dst, const T* __restrict__ src,               \
                                             const unsigned* __restrict__ pairs, int W) {                  \
    rows_copy<T>(dst, src, pairs, W);                                                                       \
  }                                                                                                         \
  RLHF_EXPORT(copy_rows_##sfx)

ROWS_INSTANTIATE(float, f32)
ROWS_INSTANTIATE(bf16, bf16)
