// AdamW with fp32 state, and the sum-of-squares reduction for the global gradient norm.
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + wd * p)     with bc1 = 1 - b1^t, bc2 = 1 - b2^t (host, f64)
// Both work on a whole tensor list in one launch, from a host-built table of chunks (one block each).
// adamw_multi_f32: the f32 params are the master weights. adamw_multi_bf16: `master` (f32) is updated and
// the bf16 params receive round(master). m, v, master: f32; grad in the param dtype.
// sum of squares: stage 1 (sum_squares_multi_partial_*) f64 per-thread sums, one partial per chunk; stage 2
// (sum_squares_final) one 256-thread block sums the partials in a fixed order. The chunking depends on the
// tensor sizes alone, so the result is bit-identical run to run.
#include "common.cuh"

template <class T>
__device__ __forceinline__ void adamw_element(T* __restrict__ param, float* __restrict__ master,
                                              const T* __restrict__ grad, float* __restrict__ m,
                                              float* __restrict__ v, long long i, float lr, float b1, float b2,
                                              float eps, float wd, float bc1, float bc2, float grad_scale) {
  const float g = to_f32(grad[i]) * grad_scale;
  const float mi = b1 * m[i] + (1.f - b1) * g;
  const float vi = b2 * v[i] + (1.f - b2) * g * g;
  m[i] = mi;
  v[i] = vi;
  float p = master ? master[i] : to_f32(param[i]);
  p -= lr * ((mi / bc1) / (sqrtf(vi / bc2) + eps) + wd * p);
  if (master) master[i] = p;
  param[i] = from_f32<T>(p);
}

// Multi-tensor AdamW: one launch for a whole parameter list. The host cuts every tensor into chunks (addresses
// already offset to the chunk); block i updates chunk i with the tensor's weight decay.
struct AdamWChunk {
  unsigned long long param, master, grad, m, v;  // master 0 for adamw_multi_f32
  int len;
  float wd;
};

template <class T>
__device__ void adamw_multi(const AdamWChunk* __restrict__ chunks, float lr, float b1, float b2, float eps, float bc1,
                            float bc2, float grad_scale) {
  const AdamWChunk c = chunks[blockIdx.x];
  T* param = reinterpret_cast<T*>(c.param);
  float* master = reinterpret_cast<float*>(c.master);
  const T* grad = reinterpret_cast<const T*>(c.grad);
  float* m = reinterpret_cast<float*>(c.m);
  float* v = reinterpret_cast<float*>(c.v);
  for (int i = threadIdx.x; i < c.len; i += blockDim.x)
    adamw_element<T>(param, master, grad, m, v, i, lr, b1, b2, eps, c.wd, bc1, bc2, grad_scale);
}

// The block's sum of one f64 per thread, in a fixed order, written to *out by thread 0.
__device__ __forceinline__ void block_sum_f64_store(double s, double* out) {
  __shared__ double red[32];
  s = warp_sum_f64(s);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) red[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < (int)(blockDim.x / 32) ? red[lane] : 0.0;
    s = warp_sum_f64(s);
    if (lane == 0) *out = s;
  }
}

// Multi-tensor sum of squares: block i sums chunk i (address already offset) into partial[i];
// sum_squares_final then adds the partials in order.
struct SumSqChunk {
  unsigned long long x;
  int len;
  int pad;
};

template <class T>
__device__ void sum_squares_multi_partial(double* __restrict__ partial, const SumSqChunk* __restrict__ chunks) {
  const SumSqChunk c = chunks[blockIdx.x];
  const T* x = reinterpret_cast<const T*>(c.x);
  double s = 0.0;
  for (int i = threadIdx.x; i < c.len; i += blockDim.x) {
    double v = to_f32(x[i]);
    s += v * v;
  }
  block_sum_f64_store(s, partial + blockIdx.x);
}

extern "C" __global__ void sum_squares_final(double* __restrict__ out, const double* __restrict__ partial, int G) {
  double s = 0.0;
  for (int i = threadIdx.x; i < G; i += blockDim.x) s += partial[i];
  block_sum_f64_store(s, out);
}
RLHF_EXPORT(sum_squares_final)

#define ADAMW_INSTANTIATE(T, sfx)                                                                             \
  extern "C" __global__ void adamw_multi_##sfx(const AdamWChunk* __restrict__ chunks, float lr, float b1,     \
                                               float b2, float eps, float bc1, float bc2, float grad_scale) { \
    adamw_multi<T>(chunks, lr, b1, b2, eps, bc1, bc2, grad_scale);                                           \
  }                                                                                                           \
  RLHF_EXPORT(adamw_multi_##sfx)                                                                              \
  extern "C" __global__ void sum_squares_multi_partial_##sfx(double* __restrict__ partial,                   \
                                                             const SumSqChunk* __restrict__ chunks) {        \
    sum_squares_multi_partial<T>(partial, chunks);                                                            \
  }                                                                                                           \
  RLHF_EXPORT(sum_squares_multi_partial_##sfx)

ADAMW_INSTANTIATE(float, f32)
ADAMW_INSTANTIATE(bf16, bf16)
