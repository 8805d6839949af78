// CPU simulator of the CUDA kernel dialect used in kernels/*.cu.
//
// The same .cu source compiles as C++ (g++ -DRLHF_SIM) and runs on CPU threads with CUDA semantics:
//  - a block's threads run as fibers (ucontext) on one OS thread; __syncthreads() and the warp primitives
//    switch fibers, so a barrier is a real barrier; blocks run in parallel on a small pool of OS threads;
//  - threads that return early leave every barrier (Volta+ independent thread scheduling semantics);
//  - `__shared__` variables are `static thread_local`: one copy per OS worker, and a worker runs one block at a
//    time, so each running block has its own; dynamic shared memory comes from RLHF_DYN_SMEM (common.cuh);
//  - warp shuffles/ballots exchange values through per-warp slots plus a warp barrier;
//  - WMMA fragments hold the whole tile in every lane; mma_sync computes the full tile product in f32.
// Race-detection mode (env RLHF_SIM_RACE=1, or rlhf_sim_set_options) runs blocks in a random order and resumes
// a block's fibers in a random order at every scheduling pass, and lets one warp at a time run ahead.
// Race checker (on unless RLHF_SIM_RACECHECK=0): the kernel files are compiled with -fsanitize=thread, whose
// per-access callbacks (__tsan_read4(addr), ...) sim_runtime.cpp implements: every shared-memory access is
// checked against the last writer and readers of its bytes (see sim_runtime.cpp, "race checker"). Array
// bounds: also -fsanitize=bounds, whose callback (an index out of an array's range) sim_runtime.cpp implements. Simulator
// internals that kernel code calls (thread indices, warp exchanges, atomics, WMMA arithmetic) are
// RLHF_SIM_NOCHECK: not inlined into the kernels, so not instrumented.
//
// Not simulated (must stay out of simulated code, behind `#ifndef RLHF_SIM`): inline PTX, cp.async, wgmma, TMA;
// the one tensor-core instruction used through inline PTX, mma.sync m16n8k16 bf16, has a simulated twin
// (sim::mma_m16n8k16_bf16).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <type_traits>
#include <utility>

#ifndef RLHF_SIM
#define RLHF_SIM 1
#endif

// ---------------------------------------------------------------------------------------------------------
// Qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __constant__ static const
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __grid_constant__

// Functions of the simulator itself: never instrumented by the race checker (out of line in kernel code).
#define RLHF_SIM_NOCHECK __attribute__((no_sanitize("thread"), noinline))

// ---------------------------------------------------------------------------------------------------------
// Index types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace sim {

enum FiberState : int { RUNNABLE = 0, WAIT_BLOCK = 1, WAIT_WARP = 2, DONE = 3 };

struct WarpSlots {
  alignas(16) unsigned char v[2][32][16];  // two parities so one warp barrier per exchange suffices
};

struct BlockCtx {
  uint3 bid;
  dim3 bdim;
  dim3 gdim;
  unsigned char* dyn_smem;
  size_t dyn_smem_bytes;
  WarpSlots* warps;
  unsigned nthreads;
};

struct ThreadCtx {
  uint3 tid;
  unsigned linear;
  unsigned lane;
  unsigned warp;
  int state;
  unsigned parity;    // alternates on every warp exchange
  uint64_t nexch;     // number of warp exchanges done (ballot stamps)
  uint32_t bep;       // race checker: block barriers passed
  uint32_t wep;       // race checker: warp barriers passed (__syncwarp, shuffles, WMMA load/store)
  uint32_t coll;      // race checker: nonzero inside a warp-collective store (WMMA store_matrix_sync)
  BlockCtx* blk;
  void* fiber;        // runtime-private (ucontext)
};

extern thread_local ThreadCtx* g_cur;
extern thread_local BlockCtx* g_blk;

// Index variables for kernel code (out of line: not instrumented).
RLHF_SIM_NOCHECK const uint3& cur_tid();
RLHF_SIM_NOCHECK const uint3& cur_bid();
RLHF_SIM_NOCHECK const dim3& cur_bdim();
RLHF_SIM_NOCHECK const dim3& cur_gdim();
// Brackets a warp-collective store (every lane stores the same tile): the lanes' identical writes do not race.
RLHF_SIM_NOCHECK void collective_begin();
RLHF_SIM_NOCHECK void collective_end();

void block_barrier();  // __syncthreads
// __syncwarp, WMMA loads/stores (orders_memory: the race checker's warp epoch advances) and the exchange of
// shuffles and ballots (not a memory barrier on the GPU: shared-memory accesses it separates stay unordered).
void warp_barrier(bool orders_memory = true);
unsigned warp_live_mask();
[[noreturn]] void trap(const char* what);

// Exchange a value of up to 16 bytes within the warp: every live lane publishes `v`; returns lane `src`'s value.
template <class T>
RLHF_SIM_NOCHECK T exchange(const T& v, unsigned src) {
  static_assert(sizeof(T) <= 16, "warp exchange of a value over 16 bytes");
  ThreadCtx* t = g_cur;
  unsigned p = (t->parity ^= 1u);
  WarpSlots& s = t->blk->warps[t->warp];
  std::memcpy(s.v[p][t->lane], &v, sizeof(T));
  t->nexch++;
  warp_barrier(false);
  t = g_cur;
  T r;
  std::memcpy(&r, t->blk->warps[t->warp].v[p][src & 31u], sizeof(T));
  return r;
}

}  // namespace sim

#define threadIdx (::sim::cur_tid())
#define blockIdx (::sim::cur_bid())
#define blockDim (::sim::cur_bdim())
#define gridDim (::sim::cur_gdim())
#define warpSize 32

inline void __syncthreads() { ::sim::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::sim::warp_barrier(); }
RLHF_SIM_NOCHECK inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
RLHF_SIM_NOCHECK inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned __activemask() { return ::sim::warp_live_mask(); }
[[noreturn]] inline void __trap() { ::sim::trap("__trap() called"); }

// ---------------------------------------------------------------------------------------------------------
// Warp primitives (full-warp participation as the kernels use them; `width` subdivides the warp)
template <class T>
inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
  unsigned lane = ::sim::g_cur->lane;
  unsigned base = lane & ~(unsigned)(width - 1);
  return ::sim::exchange(v, base + ((unsigned)src & (unsigned)(width - 1)));
}
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  unsigned lane = ::sim::g_cur->lane;
  unsigned src = lane ^ (unsigned)mask;
  if ((src & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1))) src = lane;
  return ::sim::exchange(v, src);
}
template <class T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  unsigned lane = ::sim::g_cur->lane;
  unsigned src = ((lane & (unsigned)(width - 1)) + delta < (unsigned)width) ? lane + delta : lane;
  return ::sim::exchange(v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  unsigned lane = ::sim::g_cur->lane;
  unsigned src = ((lane & (unsigned)(width - 1)) >= delta) ? lane - delta : lane;
  return ::sim::exchange(v, src);
}
unsigned __ballot_sync(unsigned mask, int pred);
inline int __all_sync(unsigned mask, int pred) {
  return __ballot_sync(mask, pred) == (mask & ::sim::warp_live_mask());
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }

// ---------------------------------------------------------------------------------------------------------
// Math
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float exp2f_(float x) { return exp2f(x); }
inline float __exp2f(float x) { return exp2f(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __ffs(unsigned x) { return __builtin_ffs((int)x); }
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }

// ---------------------------------------------------------------------------------------------------------
// Atomics (blocks run on parallel OS threads: these are real atomics; exempt from the race checker)
RLHF_SIM_NOCHECK inline float atomicAdd(float* a, float v) {
  uint32_t* p = reinterpret_cast<uint32_t*>(a);
  uint32_t old = __atomic_load_n(p, __ATOMIC_RELAXED), nw;
  do {
    float f = __uint_as_float(old) + v;
    nw = __float_as_uint(f);
  } while (!__atomic_compare_exchange_n(p, &old, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  return __uint_as_float(old);
}
RLHF_SIM_NOCHECK inline double atomicAdd(double* a, double v) {
  uint64_t* p = reinterpret_cast<uint64_t*>(a);
  uint64_t old = __atomic_load_n(p, __ATOMIC_RELAXED), nw;
  do {
    double f, o;
    std::memcpy(&o, &old, 8);
    f = o + v;
    std::memcpy(&nw, &f, 8);
  } while (!__atomic_compare_exchange_n(p, &old, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  double r;
  std::memcpy(&r, &old, 8);
  return r;
}
RLHF_SIM_NOCHECK inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
RLHF_SIM_NOCHECK inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }
RLHF_SIM_NOCHECK inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
}
RLHF_SIM_NOCHECK inline int atomicCAS(int* a, int cmp, int val) {
  __atomic_compare_exchange_n(a, &cmp, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
RLHF_SIM_NOCHECK inline unsigned atomicCAS(unsigned* a, unsigned cmp, unsigned val) {
  __atomic_compare_exchange_n(a, &cmp, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
RLHF_SIM_NOCHECK inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long cmp, unsigned long long val) {
  __atomic_compare_exchange_n(a, &cmp, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
template <class T>
RLHF_SIM_NOCHECK inline T sim_atomic_minmax(T* a, T v, bool is_max) {
  T old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while ((is_max ? v > old : v < old) &&
         !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
  }
  return old;
}
RLHF_SIM_NOCHECK inline int atomicMax(int* a, int v) { return sim_atomic_minmax(a, v, true); }
RLHF_SIM_NOCHECK inline unsigned atomicMax(unsigned* a, unsigned v) { return sim_atomic_minmax(a, v, true); }
RLHF_SIM_NOCHECK inline int atomicMin(int* a, int v) { return sim_atomic_minmax(a, v, false); }
RLHF_SIM_NOCHECK inline unsigned atomicMin(unsigned* a, unsigned v) { return sim_atomic_minmax(a, v, false); }
RLHF_SIM_NOCHECK inline int atomicExch(int* a, int v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }
RLHF_SIM_NOCHECK inline unsigned atomicExch(unsigned* a, unsigned v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------------------------------------
// Vector types
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---------------------------------------------------------------------------------------------------------
// bf16 / f16 (storage types; explicit conversions, round to nearest even, like cuda_bf16.h / cuda_fp16.h)
struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
struct alignas(2) __half {
  unsigned short __x;
};
struct alignas(4) __half2 {
  __half x, y;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u = __float_as_uint(f);
  __nv_bfloat16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.__x = (unsigned short)((u >> 16) | 0x40u);  // quiet NaN
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    r.__x = (unsigned short)(u >> 16);
  }
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((uint32_t)h.__x << 16); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return __floats2bfloat162_rn(f.x, f.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) { return {__bfloat162float(h.x), __bfloat162float(h.y)}; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short x) { __nv_bfloat16 r; r.__x = x; return r; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }

inline __half __float2half_rn(float f) {
  _Float16 h = (_Float16)f;  // IEEE round to nearest even
  __half r;
  std::memcpy(&r.__x, &h, 2);
  return r;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) {
  _Float16 v;
  std::memcpy(&v, &h.__x, 2);
  return (float)v;
}
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half_rn(a), __float2half_rn(b)}; }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }

// ---------------------------------------------------------------------------------------------------------
// The warp-wide tensor-core product mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (inline PTX on the
// GPU, common.cuh's mma_bf16_16816), from the lanes' fragments in the PTX ISA's layout: D (16 x 8 f32) += A
// (16 x 16 bf16) B (16 x 8 bf16), with g = lane / 4, t = lane % 4 and two bf16 per register (the lower index in
// the low half): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9];
// b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; d[0], d[1] = D[g][2t, 2t+1], d[2], d[3] = D[g+8][2t, 2t+1].
// Each lane gathers the rows of A and the columns of B it needs through warp exchanges (f32 sums over k).
namespace sim {
RLHF_SIM_NOCHECK inline void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
  const unsigned lane = g_cur->lane, g = lane / 4, t = lane % 4;
  const uint4 av = {a[0], a[1], a[2], a[3]};
  const uint2 bv = {b[0], b[1]};
  auto lo = [](unsigned x) { return __uint_as_float(x << 16); };
  auto hi = [](unsigned x) { return __uint_as_float(x & 0xffff0000u); };
  // Row pair (x: k = 2j, 2j+1; z: k = 2j+8, 2j+9) times column (x, y: the same k).
  auto dot = [&](unsigned x, unsigned z, uint2 c) { return lo(x) * lo(c.x) + hi(x) * hi(c.x) + lo(z) * lo(c.y) + hi(z) * hi(c.y); };
  float acc[4] = {d[0], d[1], d[2], d[3]};
  for (unsigned j = 0; j < 4; j++) {
    const uint4 ar = exchange(av, 4 * g + j);           // lane (g, j): rows g, g+8 at k = 2j.. and 2j+8..
    const uint2 b0 = exchange(bv, 4 * (2 * t) + j);     // lane (2t, j): column 2t
    const uint2 b1 = exchange(bv, 4 * (2 * t + 1) + j); // lane (2t+1, j): column 2t+1
    acc[0] += dot(ar.x, ar.z, b0);
    acc[1] += dot(ar.x, ar.z, b1);
    acc[2] += dot(ar.y, ar.w, b0);
    acc[3] += dot(ar.y, ar.w, b1);
  }
  for (int i = 0; i < 4; i++) d[i] = acc[i];
}
}  // namespace sim

// ---------------------------------------------------------------------------------------------------------
// WMMA (nvcuda::wmma): every lane holds the whole tile; elementwise access through x[]/num_elements works
// because the element-to-lane mapping is unspecified on the GPU too.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct shape {
  static constexpr int rows = std::is_same<Use, matrix_a>::value ? M : (std::is_same<Use, matrix_b>::value ? K : M);
  static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
};
inline float to_f(float v) { return v; }
inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float to_f(__half v) { return __half2float(v); }
template <class T>
inline T from_f(float v);
template <>
inline float from_f<float>(float v) { return v; }
template <>
inline __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
inline __half from_f<__half>(float v) { return __float2half_rn(v); }
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static constexpr int rows = detail::shape<Use, M, N, K>::rows;
  static constexpr int cols = detail::shape<Use, M, N, K>::cols;
  enum { num_elements = rows * cols };
  T x[rows * cols];
};

template <class Use, int M, int N, int K, class T, class L, class V>
RLHF_SIM_NOCHECK void fill_fragment(fragment<Use, M, N, K, T, L>& f, const V& v) {
  T tv = detail::from_f<T>(detail::to_f(v));
  for (int i = 0; i < f.num_elements; i++) f.x[i] = tv;
}

// matrix_a / matrix_b with a compile-time layout
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same<Use, accumulator>::value, "accumulator loads need a layout_t");
  constexpr int R = fragment<Use, M, N, K, T, L>::rows, C = fragment<Use, M, N, K, T, L>::cols;
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++)
      f.x[r * C + c] = std::is_same<L, row_major>::value ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
  ::sim::warp_barrier();  // collective: every lane has read before any lane goes on (e.g. to store over it)
}

template <int M, int N, int K, class T>
inline void load_matrix_sync(fragment<accumulator, M, N, K, T, void>& f, const T* p, unsigned ldm, layout_t l) {
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++) f.x[r * N + c] = l == mem_row_major ? p[(size_t)r * ldm + c] : p[(size_t)c * ldm + r];
  ::sim::warp_barrier();
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T, void>& f, unsigned ldm, layout_t l) {
  ::sim::warp_barrier();  // collective: every lane holds the same tile; all arrive before the (identical) stores
  ::sim::collective_begin();
  for (int r = 0; r < M; r++)
    for (int c = 0; c < N; c++) {
      T* d = l == mem_row_major ? &p[(size_t)r * ldm + c] : &p[(size_t)c * ldm + r];
      *d = f.x[r * N + c];
    }
  ::sim::collective_end();
}

template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
RLHF_SIM_NOCHECK void mma_sync(fragment<accumulator, M, N, K, TC, void>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, TC, void>& c) {
  float acc[M * N];
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float s = detail::to_f(c.x[i * N + j]);
      for (int k = 0; k < K; k++) s = fmaf(detail::to_f(a.x[i * K + k]), detail::to_f(b.x[k * N + j]), s);
      acc[i * N + j] = s;
    }
  for (int i = 0; i < M * N; i++) d.x[i] = detail::from_f<TC>(acc[i]);
}
}  // namespace wmma
}  // namespace nvcuda

// ---------------------------------------------------------------------------------------------------------
// Kernel export: the simulator finds kernels by their extern "C" name, like cuModuleGetFunction.
namespace sim {
typedef void (*Thunk)(void** args);
struct Registrar {
  Registrar(const char* name, Thunk t);
};
template <auto F>
struct ThunkOf;
template <class... A, void (*F)(A...)>
struct ThunkOf<F> {
  template <size_t... I>
  static void call(void** a, std::index_sequence<I...>) {
    F(*static_cast<std::decay_t<A>*>(a[I])...);
  }
  static void run(void** a) { call(a, std::index_sequence_for<A...>{}); }
};
unsigned char* dyn_smem();
}  // namespace sim

#define RLHF_SIM_CAT2(a, b) a##b
#define RLHF_SIM_CAT(a, b) RLHF_SIM_CAT2(a, b)
#define SIM_EXPORT(name) \
  static ::sim::Registrar RLHF_SIM_CAT(rlhf_sim_reg_, name)(#name, &::sim::ThunkOf<&name>::run);
