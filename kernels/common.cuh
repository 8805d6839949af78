// Shared by every kernel file: the two build modes, dtype helpers, packed 16-byte access, reductions.
//
// Build modes:
//  - nvcc (PTX for the GPU): the CUDA headers.
//  - RLHF_SIM (g++ through build.rs): kernels/sim/cuda_sim.h, the CPU simulator of this dialect.
// Kernel entry points are `extern "C"` with a dtype suffix (`_f32`, `_bf16`) and are listed with
// RLHF_EXPORT(name) so the simulator can find them by name (no-op under nvcc).
#pragma once

#ifdef RLHF_SIM
#include "sim/cuda_sim.h"
#define RLHF_EXPORT(name) SIM_EXPORT(name)
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
#include <stdint.h>
#define RLHF_EXPORT(name)
#endif

// Dynamic shared memory of the launch (bytes set by the launch code), viewed as `type* name`.
#ifdef RLHF_SIM
#define RLHF_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(::sim::dyn_smem())
#else
// Declared once at file scope: block-scope declarations in both C-linkage kernels and C++ templates conflict.
extern __shared__ __align__(16) unsigned char rlhf_dyn_smem_[];
#define RLHF_DYN_SMEM(type, name) type* name = reinterpret_cast<type*>(rlhf_dyn_smem_)
#endif

typedef __nv_bfloat16 bf16;

// ---- scalar conversions: storage type <-> f32 compute type
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }

// The simulator checks every index into an array of known size (-fsanitize=bounds) except into a struct's last
// member array, which GCC takes for a possible flexible array member: RLHF_BOUNDS_CHECKED after such an array
// (a zero-size member, no change of layout; nothing under nvcc) keeps it checked.
#ifdef RLHF_SIM
#define RLHF_BOUNDS_CHECKED char rlhf_bounds_checked_[0];
#else
#define RLHF_BOUNDS_CHECKED
#endif

// ---- 16 bytes of T (4 floats or 8 bf16) for vectorised loads/stores; pointers must be 16-byte aligned.
template <class T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
  RLHF_BOUNDS_CHECKED
};
template <class T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}
template <class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& x) {
  *reinterpret_cast<Pack<T>*>(p) = x;
}

// ---- W consecutive elements (W * sizeof(T) <= 16, a power of two) moved as one access: W = Pack<T>::N for
// 16-byte loads where a row length allows it, W = 1 otherwise, so a kernel is written once for both widths.
template <class T, int W>
struct alignas(W * sizeof(T)) Chunk {
  T v[W];
  RLHF_BOUNDS_CHECKED
};
template <class T, int W>
__device__ __forceinline__ Chunk<T, W> load_chunk(const T* p) {
  return *reinterpret_cast<const Chunk<T, W>*>(p);
}
template <class T, int W>
__device__ __forceinline__ void store_chunk(T* p, const Chunk<T, W>& x) {
  *reinterpret_cast<Chunk<T, W>*>(p) = x;
}

// Runs `call` with the compile-time chunk width W: the 16-byte pack when `len` (a row length) is a multiple of
// it (row pointers are then 16-byte aligned; the launch layer checks), else 1.
#define RLHF_CHUNK_DISPATCH(T, len, call) \
  if ((len) % Pack<T>::N == 0) {          \
    constexpr int W = Pack<T>::N;         \
    call;                                 \
  } else {                                \
    constexpr int W = 1;                  \
    call;                                 \
  }

// ---- tensor cores through PTX: D (16 x 8 f32) += A (16 x 16 bf16, row-major) B (16 x 8 bf16, column-major),
// one warp, fragments in registers in the PTX ISA's layout for mma.m16n8k16 (g = lane / 4, t = lane % 4; two bf16
// per register, the lower index in the low half): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1],
// a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9]; b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
// d[0], d[1] = D[g][2t, 2t+1], d[2], d[3] = D[g+8][2t, 2t+1]. Unlike WMMA's, this mapping is specified, so a
// kernel can apply per-row work (a softmax) to the accumulators in registers. sm_80 and later.
__device__ __forceinline__ void mma_bf16_16816(float d[4], const unsigned a[4], const unsigned b[2]) {
#ifdef RLHF_SIM
  ::sim::mma_m16n8k16_bf16(d, a, b);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
// Two bf16 as one register (lo in the low half), and two consecutive bf16 of memory (4-byte aligned) as one.
__device__ __forceinline__ unsigned bf16x2(bf16 lo, bf16 hi) {
  return (unsigned)__bfloat16_as_ushort(lo) | ((unsigned)__bfloat16_as_ushort(hi) << 16);
}
__device__ __forceinline__ unsigned load_bf16x2(const bf16* p) { return *reinterpret_cast<const unsigned*>(p); }

// ---- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a 1-D block whose size is a multiple of 32; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_max(v);
  // Orders this call's writes of `scratch` after an earlier reduction's reads of it. Today block_max is always
  // a kernel's first reduction (block_row_logsumexp, one row per block), so no test can catch its deletion
  // (a surviving mutant of tools/kernel-mutants.py, on kernels/mutants-allowed.txt); kept for callers that
  // reduce more than once per block.
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Instantiate a kernel template `name<T>` as extern "C" `name_f32` and `name_bf16` through a wrapper macro
// written in each .cu file (the parameter lists differ per kernel).
#define RLHF_CAT2(a, b) a##b
#define RLHF_CAT(a, b) RLHF_CAT2(a, b)

// Calls f(z) with z = inv_temp * x[j] for every j < V of a row that the whole block reads in chunks of W
// (thread t takes chunks t, t + blockDim, ...; x 16-byte aligned when W > 1; a chunk may run past V into
// padding, which is read but ignored). `c <= V` in the loop would change nothing but a read: a chunk that
// starts at V is skipped element by element (an equivalent mutant, kernels/mutants-allowed.txt).
template <class T, int W, class F>
__device__ __forceinline__ void for_row_scaled(const T* __restrict__ x, int V, float inv_temp, F f) {
  for (int c = threadIdx.x * W; c < V; c += blockDim.x * W) {
    const Chunk<T, W> xc = load_chunk<T, W>(x + c);
#pragma unroll
    for (int k = 0; k < W; k++) {
      if (c + k >= V) break;
      f(inv_temp * to_f32(xc.v[k]));
    }
  }
}

// logsumexp_j (inv_temp * x[j]) over j < V of a row the whole block reads (as for_row_scaled): an online
// (max, sum) per thread, combined across the block. Every thread gets the result. (`z >= m` for `z > m` is an
// equivalent mutant for finite z: a tie adds exp(0) = 1 to s either way.)
template <class T, int W>
__device__ float block_row_logsumexp(const T* __restrict__ x, int V, float inv_temp, float* scratch) {
  float m = -INFINITY, s = 0.f;
  for_row_scaled<T, W>(x, V, inv_temp, [&](float z) {
    if (z > m) {
      s = s * __expf(m - z) + 1.f;
      m = z;
    } else {
      s += __expf(z - m);
    }
  });
  const float M = block_max(m, scratch);
  return M + logf(block_sum(m == -INFINITY ? 0.f : s * __expf(m - M), scratch));
}
