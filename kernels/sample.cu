// The device sampler: one token per row of logits, its id and temperature-scaled log-probability, under the
// contract of crate::ops::sample, whose module docs give the math and the blocked order this kernel follows
// term by term (so that it chooses what the CPU reference chooses for the same logits and uniform u):
//   z_i = x_i / t (f64; t = 1 when greedy), m = max z, w_i = exp(z_i - m), S = sum w (blocked), lse = m + ln S
//   ids[row] = the chosen id, logprobs[row] = z_id - lse (f32)
// Shapes: logits [rows, Vp] (T, the first V columns valid), u [rows] f64, ids [rows] u32, logprobs [rows] f32.
// One block of SAMPLE_BLOCK threads per row; thread c owns chunk c of the row (L = ceil(V / SAMPLE_BLOCK)
// contiguous ids) and thread 0 combines the chunks in order:
//   pass 1: the first non-finite logit and the first maximum of each chunk; pass 2: the chunk sums of w;
//   greedy: the first maximum; plain: the inverse CDF over the chunk sums, then within the chosen chunk;
//   filtered (top-k / top-p): the ids in descending z one at a time (each a block-wide argmax below the
//   previous one in (z desc, id asc) order), once to find how many are kept and their sum, once to draw.
// A non-finite logit (the first, at id i) is reported as ids[row] = V + i, logprobs[row] = that logit.
#include "common.cuh"
#include "geometry.cuh"

// The chunk of thread `c`: ids [lo, hi).
struct SampleChunk {
  int lo, hi;
  __device__ SampleChunk(int c, int V) {
    const int L = (V + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    lo = min(c * L, V);
    hi = min(lo + L, V);
  }
};

// Thread 0: the first of the chunk candidates (z[c], id[c]) with the largest z (id -1: none), i.e. the
// largest in (z desc, id asc) order, since chunks come in id order and a chunk's candidate is its first.
__device__ int first_of_chunks(const double* z, const int* id) {
  int best = -1;
  double zb = 0.0;
  for (int c = 0; c < SAMPLE_BLOCK; c++) {
    if (id[c] >= 0 && (best < 0 || z[c] > zb)) {
      best = id[c];
      zb = z[c];
    }
  }
  return best;
}

template <class T>
__device__ void sample_row(const T* __restrict__ logits, const double* __restrict__ u, unsigned* __restrict__ ids,
                           float* __restrict__ logprobs, int V, int Vp, double temperature, int top_k, double top_p) {
  __shared__ double zc[SAMPLE_BLOCK];  // per chunk: its candidate's z, then its sum of w
  __shared__ int ic[SAMPLE_BLOCK];     // per chunk: its candidate's id (-1: none), then its first non-finite
  __shared__ double zprev;             // the filtered rounds' previous id and z, broadcast by thread 0
  __shared__ int iprev, done;
  const long long row = blockIdx.x;
  const T* x = logits + row * Vp;
  const int c = threadIdx.x;
  const SampleChunk ch(c, V);
  const double t = temperature > 0.0 ? temperature : 1.0;

  // pass 1: the chunk's first non-finite logit, and its first maximum of z.
  int bad = -1, im = -1;
  double zm = 0.0;
  for (int i = ch.lo; i < ch.hi; i++) {
    const float xi = to_f32(x[i]);
    if (xi - xi != 0.f) {  // inf - inf and NaN - NaN are NaN
      if (bad < 0) bad = i;
      continue;
    }
    const double z = (double)xi / t;
    if (im < 0 || z > zm) {
      im = i;
      zm = z;
    }
  }
  ic[c] = bad;
  __syncthreads();
  if (c == 0) {
    done = -1;
    for (int k = 0; k < SAMPLE_BLOCK && done < 0; k++) done = ic[k];
  }
  __syncthreads();
  if (done >= 0) {
    if (c == 0) {
      ids[row] = (unsigned)(V + done);
      logprobs[row] = to_f32(x[done]);
    }
    return;
  }
  zc[c] = zm;
  ic[c] = im;
  __syncthreads();
  if (c == 0) {
    iprev = first_of_chunks(zc, ic);
    zprev = (double)to_f32(x[iprev]) / t;
  }
  __syncthreads();
  const int imax = iprev;
  const double m = zprev;

  // pass 2: the chunk sums of w, added in chunk order by thread 0.
  double s = 0.0;
  for (int i = ch.lo; i < ch.hi; i++) s += exp((double)to_f32(x[i]) / t - m);
  zc[c] = s;  // thread 0 read the candidates before the barrier above
  __syncthreads();
  double total = 0.0;
  if (c == 0)
    for (int k = 0; k < SAMPLE_BLOCK; k++) total += zc[k];
  const double lse = m + log(total);
  int tok = imax;
  if (temperature > 0.0 && top_k == 0 && top_p >= 1.0) {
    if (c == 0) {
      const double target = u[row] * total;
      double before = 0.0;
      tok = V - 1;
      for (int k = 0; k < SAMPLE_BLOCK; k++) {
        if (before + zc[k] >= target) {
          const SampleChunk hit(k, V);
          double run = before;
          tok = hit.hi - 1;
          for (int i = hit.lo; i < hit.hi; i++) {
            run += exp((double)to_f32(x[i]) / t - m);
            if (run >= target) {
              tok = i;
              break;
            }
          }
          break;
        }
        before += zc[k];
      }
    }
  } else if (temperature > 0.0) {
    const int limit = top_k > 0 && top_k < V ? top_k : V;
    int kept = 0;
    double kept_sum = 0.0, left = 0.0;
    // pass 0 counts the kept ids and sums their w; pass 1 draws among them.
    for (int pass = 0; pass < 2; pass++) {
      __syncthreads();  // done, iprev, zprev of the previous pass no longer read
      if (c == 0) {
        iprev = -1;
        zprev = INFINITY;
        done = 0;
        left = u[row] * kept_sum;
      }
      int n = 0;
      for (;;) {
        __syncthreads();
        // This chunk's first largest z below the previous id in (z desc, id asc) order.
        const double zp = zprev;
        const int ip = iprev;
        int ib = -1;
        double zb = 0.0;
        for (int i = ch.lo; i < ch.hi; i++) {
          const double z = (double)to_f32(x[i]) / t;
          if ((z < zp || (z == zp && i > ip)) && (ib < 0 || z > zb)) {
            ib = i;
            zb = z;
          }
        }
        zc[c] = zb;
        ic[c] = ib;
        __syncthreads();
        if (c == 0) {
          const int id = first_of_chunks(zc, ic);
          const double z = (double)to_f32(x[id]) / t;
          const double w = exp(z - m);
          n++;
          if (pass == 0) {
            kept_sum += w;
            if (top_p < 1.0) left += exp(z - lse);  // the running top-p mass
            done = n == limit || (top_p < 1.0 && left >= top_p);
            if (done) kept = n;
          } else {
            left -= w;
            done = left <= 0.0 || n == kept;
            if (done) tok = id;
          }
          iprev = id;
          zprev = z;
        }
        __syncthreads();
        if (done) break;
      }
    }
  }
  if (c == 0) {
    ids[row] = (unsigned)tok;
    logprobs[row] = (float)((double)to_f32(x[tok]) / t - lse);
  }
}

#define SAMPLE_INSTANTIATE(T, sfx)                                                                             \
  extern "C" __global__ void sample_##sfx(const T* __restrict__ logits, const double* __restrict__ u,         \
                                          unsigned* __restrict__ ids, float* __restrict__ logprobs, int V,   \
                                          int Vp, double temperature, int top_k, double top_p) {             \
    sample_row<T>(logits, u, ids, logprobs, V, Vp, temperature, top_k, top_p);                                \
  }                                                                                                           \
  RLHF_EXPORT(sample_##sfx)

SAMPLE_INSTANTIATE(float, f32)
SAMPLE_INSTANTIATE(bf16, bf16)
