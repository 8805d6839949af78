// Test-only kernels (simulator only, never compiled to PTX): each correct kernel has a twin with one planted
// bug, and tests/kernels_sim.rs asserts that the simulator makes the buggy twin's result wrong.
#include "../common.cuh"

// Block sum through a shared-memory tree; one block of 256 threads, out[blockIdx.x] = sum of 256 inputs.
extern "C" __global__ void planted_tree_sum_ok(float* out, const float* inp) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  s[t] = inp[blockIdx.x * 256 + t];
  __syncthreads();
  for (int h = 128; h > 0; h >>= 1) {
    if (t < h) s[t] += s[t + h];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}
RLHF_EXPORT(planted_tree_sum_ok)

// BUG: no barriers between the tree steps.
extern "C" __global__ void planted_tree_sum_nobarrier(float* out, const float* inp) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  s[t] = inp[blockIdx.x * 256 + t];
  for (int h = 128; h > 0; h >>= 1) {
    if (t < h) s[t] += s[t + h];
  }
  if (t == 0) out[blockIdx.x] = s[0];
}
RLHF_EXPORT(planted_tree_sum_nobarrier)

// out[i] = inp[i] - inp[i-1] (out[0] = inp[0]) through shared memory, per 256-thread block.
extern "C" __global__ void planted_neighbor_diff_ok(float* out, const float* inp) {
  __shared__ float s[256];
  const int t = threadIdx.x, i = blockIdx.x * 256 + t;
  s[t] = inp[i];
  __syncthreads();
  out[i] = s[t] - (t > 0 ? s[t - 1] : 0.f);
}
RLHF_EXPORT(planted_neighbor_diff_ok)

// BUG: missing barrier. Reading the LOWER neighbour: an in-order schedule happens to hide it (thread t-1 ran
// first); race mode (random resumption order) exposes it.
extern "C" __global__ void planted_neighbor_diff_nobarrier(float* out, const float* inp) {
  __shared__ float s[256];
  const int t = threadIdx.x, i = blockIdx.x * 256 + t;
  s[t] = inp[i];
  out[i] = s[t] - (t > 0 ? s[t - 1] : 0.f);
}
RLHF_EXPORT(planted_neighbor_diff_nobarrier)

// out[i] = 2 * inp[i] for i < n.
extern "C" __global__ void planted_scale2_ok(float* out, const float* inp, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = 2.f * inp[i];
}
RLHF_EXPORT(planted_scale2_ok)

// BUG: off-by-one bound (writes out[n]).
extern "C" __global__ void planted_scale2_offbyone(float* out, const float* inp, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i > n) return;
  out[i] = 2.f * inp[i];
}
RLHF_EXPORT(planted_scale2_offbyone)

// One warp per 32 inputs: out[w] = warp sum by butterfly shuffles.
extern "C" __global__ void planted_warp_sum_ok(float* out, const float* inp) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = inp[i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) out[i / 32] = v;
}
RLHF_EXPORT(planted_warp_sum_ok)

// BUG: wrong shuffle offsets (starts at 8: lanes 16..31 never reach lane 0).
extern "C" __global__ void planted_warp_sum_badoffset(float* out, const float* inp) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = inp[i];
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) out[i / 32] = v;
}
RLHF_EXPORT(planted_warp_sum_badoffset)

// BUG: lane 0 waits at __syncthreads while the rest of its warp waits at __syncwarp (which needs lane 0):
// a hang on the GPU; the simulator reports the deadlock.
extern "C" __global__ void planted_divergent_barrier(float* out, const float* inp) {
  const int t = threadIdx.x;
  out[t] = inp[t];
  if (t == 0) {
    __syncthreads();
  } else {
    __syncwarp();
  }
}
RLHF_EXPORT(planted_divergent_barrier)

// Volta semantics: threads that exit early leave the barrier; the rest must still pass it.
extern "C" __global__ void planted_early_exit_ok(float* out, const float* inp, int n) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  if (t >= n) return;
  s[t] = inp[t];
  __syncthreads();
  out[t] = s[(t + 1) % n];
}
RLHF_EXPORT(planted_early_exit_ok)

// The key-tile loop of attention_forward_mma_bf16 in small: per tile, 64 threads stage a tile of 64 keys in
// shared memory, then every warp reads the whole tile in several warp-level steps (the reads interleaved with
// shuffles, as P.V reads Vs between WMMA steps). out[t] = sum over tiles and keys of key * (warp + 1), via the
// warp sums. 128 threads (4 warps); inp holds ntiles * 64 keys.
template <bool TOP_BARRIER>
__device__ void planted_key_tiles(float* out, const float* inp, int ntiles) {
  __shared__ float Ks[64];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  float acc = 0.f;
  for (int k = 0; k < ntiles; k++) {
    if (TOP_BARRIER) __syncthreads();  // previous tile's keys no longer read
    if (t < 64) Ks[t] = inp[k * 64 + t];
    __syncthreads();
    for (int part = 0; part < 4; part++) {
      float v = 0.f;
      for (int j = 0; j < 16; j++) v += Ks[part * 16 + (lane + j) % 16] * (float)(warp + 1);
      acc += warp_sum(v) / 32.f;
    }
  }
  out[t] = acc;
}
extern "C" __global__ void planted_key_tiles_ok(float* out, const float* inp, int ntiles) {
  planted_key_tiles<true>(out, inp, ntiles);
}
RLHF_EXPORT(planted_key_tiles_ok)
// BUG: the barrier at the top of the key-tile loop deleted (the planted bug of issue 18): a warp done with tile
// k overwrites Ks with tile k+1 while another warp still reads tile k.
extern "C" __global__ void planted_key_tiles_notopbarrier(float* out, const float* inp, int ntiles) {
  planted_key_tiles<false>(out, inp, ntiles);
}
RLHF_EXPORT(planted_key_tiles_notopbarrier)

// BUG: two threads of different warps write the same shared word with no barrier between (write-after-write).
extern "C" __global__ void planted_shared_waw(float* out, const float* inp) {
  __shared__ float s[1];
  const int t = threadIdx.x;
  if (t == 0 || t == 32) s[0] = inp[t];
  __syncthreads();
  out[t] = s[0];
}
RLHF_EXPORT(planted_shared_waw)

// Atomics are exempt from the race checker: every thread adds into one shared word, then reads it after a barrier.
extern "C" __global__ void planted_shared_atomic_ok(float* out, const float* inp) {
  __shared__ float s[1];
  const int t = threadIdx.x;
  if (t == 0) s[0] = 0.f;
  __syncthreads();
  atomicAdd(&s[0], inp[t]);
  __syncthreads();
  out[t] = s[0];
}
RLHF_EXPORT(planted_shared_atomic_ok)

// BUG: lanes of one warp exchange through shared memory without __syncwarp (read-after-write within a warp).
extern "C" __global__ void planted_warp_nosyncwarp(float* out, const float* inp) {
  __shared__ float s[32];
  const int lane = threadIdx.x % 32;
  s[lane] = inp[lane];
  out[lane] = s[(lane + 1) % 32];
}
RLHF_EXPORT(planted_warp_nosyncwarp)

// The same exchange ordered by __syncwarp: no hazard.
extern "C" __global__ void planted_warp_syncwarp_ok(float* out, const float* inp) {
  __shared__ float s[32];
  const int lane = threadIdx.x % 32;
  s[lane] = inp[lane];
  __syncwarp();
  out[lane] = s[(lane + 1) % 32];
}
RLHF_EXPORT(planted_warp_syncwarp_ok)
