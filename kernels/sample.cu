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
//   filtered (top-k / top-p): the cut of the ranking by bisection, each probe one pass over the row (at
//   most 32 on the key, then a few on the id among tied logits), then the plain draw over the kept ids.
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

// The filters' rank of a logit (crate::ops::sample::rank_key): larger for a larger logit; the sign-folded
// bits, -0 as +0 (x + 0 turns -0 into +0).
__device__ __forceinline__ unsigned rank_key(float x) {
  const unsigned b = __float_as_uint(x + 0.f);
  return (b >> 31) ? ~b : b | 0x80000000u;
}

// Where the filters cut the ranking (crate::ops::sample::Cut): an id with key k is kept when k > key, or
// k == key and its id is at most `last`.
struct Cut {
  unsigned key;
  int last;
  __device__ bool keeps(unsigned k, int i) const { return k > key || (k == key && i <= last); }
};

// All threads: whether `cut` keeps enough ids: at least `limit` of them (top-k; 0 = off), or ids whose
// probabilities exp(z - lse), summed in the blocked order, reach top_p (1 = off). The chunks' counts and
// sums go through ic / zc to thread 0, which adds them in chunk order and broadcasts the verdict. The
// caller's last read of zc / ic is behind a barrier (the previous probe's second one, or before the first).
template <class T>
__device__ bool enough(const T* x, SampleChunk ch, double t, double lse, int limit, double top_p, Cut cut,
                       double* zc, int* ic) {
  __shared__ int ok;
  int n = 0;
  double s = 0.0;
  for (int i = ch.lo; i < ch.hi; i++) {
    const float xi = to_f32(x[i]);
    if (cut.keeps(rank_key(xi), i)) {
      n++;
      if (top_p < 1.0) s += exp((double)xi / t - lse);
    }
  }
  zc[threadIdx.x] = s;
  ic[threadIdx.x] = n;
  __syncthreads();
  if (threadIdx.x == 0) {
    int count = 0;
    double mass = 0.0;
    for (int k = 0; k < SAMPLE_BLOCK; k++) {
      count += ic[k];
      mass += zc[k];
    }
    ok = (limit > 0 && count >= limit) || (top_p < 1.0 && mass >= top_p);
  }
  __syncthreads();
  return ok;  // rewritten only after every thread has passed the next probe's first barrier
}

// Thread 0: in chunk k, the first id of weight > 0 (w of a kept id, else 0) at which `run` plus the running
// sum of weights reaches `target`; the chunk's last id of weight if none does.
template <class T>
__device__ int draw_in_chunk(const T* x, int k, int V, double t, double m, Cut cut, double run, double target) {
  const SampleChunk ch(k, V);
  int last = ch.lo;
  for (int i = ch.lo; i < ch.hi; i++) {
    const float xi = to_f32(x[i]);
    const double w = cut.keeps(rank_key(xi), i) ? exp((double)xi / t - m) : 0.0;
    if (w > 0.0) {
      run += w;
      last = i;
      if (run >= target) break;
    }
  }
  return last;
}

// Thread 0: the inverse-CDF draw in the blocked order over the kept ids' weights, whose chunk sums are zc:
// target u * their total, the first chunk with weight whose prefix reaches it (at the latest the last chunk
// with weight: its prefix adds the chunk sums as the total did, and u < 1), then the id within it.
template <class T>
__device__ int draw(const T* x, const double* zc, int V, double t, double m, Cut cut, double u) {
  double total = 0.0;
  for (int k = 0; k < SAMPLE_BLOCK; k++) total += zc[k];
  const double target = u * total;
  double before = 0.0, at_before = 0.0;
  int at = 0;
#pragma unroll 1  // unrolled, ptxas for sm_80 holds all the chunk sums in registers and spills
  for (int k = 0; k < SAMPLE_BLOCK; k++) {
    if (zc[k] > 0.0) {
      at = k;
      at_before = before;
      if (before + zc[k] >= target) break;
    }
    before += zc[k];
  }
  return draw_in_chunk(x, at, V, t, m, cut, at_before, target);
}

template <class T>
__device__ void sample_row(const T* __restrict__ logits, const double* __restrict__ u, unsigned* __restrict__ ids,
                           float* __restrict__ logprobs, int V, int Vp, double temperature, int top_k, double top_p) {
  __shared__ double zc[SAMPLE_BLOCK];  // per chunk: its candidate's z, then its sum of w, then probe sums
  __shared__ int ic[SAMPLE_BLOCK];     // per chunk: its candidate's id (-1: none), its first non-finite, counts
  __shared__ double zmax, lse;         // broadcast by thread 0
  __shared__ int imax, bad, tie_lo, tie_hi;
  const long long row = blockIdx.x;
  const T* x = logits + row * Vp;
  const int c = threadIdx.x;
  const SampleChunk ch(c, V);
  const double t = temperature > 0.0 ? temperature : 1.0;

  // pass 1: the chunk's first non-finite logit, and its first maximum of z.
  int first_bad = -1, im = -1;
  double zm = 0.0;
  for (int i = ch.lo; i < ch.hi; i++) {
    const float xi = to_f32(x[i]);
    if (xi - xi != 0.f) {  // inf - inf and NaN - NaN are NaN
      if (first_bad < 0) first_bad = i;
      continue;
    }
    const double z = (double)xi / t;
    if (im < 0 || z > zm) {
      im = i;
      zm = z;
    }
  }
  ic[c] = first_bad;
  __syncthreads();
  if (c == 0) {
    bad = -1;
    for (int k = 0; k < SAMPLE_BLOCK && bad < 0; k++) bad = ic[k];
  }
  __syncthreads();
  if (bad >= 0) {
    if (c == 0) {
      ids[row] = (unsigned)(V + bad);
      logprobs[row] = to_f32(x[bad]);
    }
    return;
  }
  zc[c] = zm;
  ic[c] = im;
  __syncthreads();
  if (c == 0) {
    imax = first_of_chunks(zc, ic);
    zmax = (double)to_f32(x[imax]) / t;
  }
  __syncthreads();
  const double m = zmax;

  // pass 2: the chunk sums of w, added in chunk order by thread 0.
  double s = 0.0;
  for (int i = ch.lo; i < ch.hi; i++) s += exp((double)to_f32(x[i]) / t - m);
  zc[c] = s;  // thread 0 read the candidates before the barrier above
  __syncthreads();
  if (c == 0) {
    double total = 0.0;
    for (int k = 0; k < SAMPLE_BLOCK; k++) total += zc[k];
    lse = m + log(total);
  }
  __syncthreads();  // lse visible; thread 0 done reading zc
  int tok = imax;
  if (temperature > 0.0) {
    Cut cut = {0u, V - 1};  // every id (no finite logit has key 0)
    const int limit = top_k > 0 && top_k < V ? top_k : 0;
    if (limit > 0 || top_p < 1.0) {
      // The cut keeping the fewest ids that is still enough (crate::ops::sample::Cut::search): bisection
      // on the key over [0, the maximum's key], then on the last id among the ties of the key found. Every
      // thread runs the same loop on the broadcast verdicts.
      unsigned lo = 0, hi = rank_key(to_f32(x[imax]));
      while (lo < hi) {
        const unsigned mid = lo + (hi - lo) / 2 + ((hi - lo) & 1u);
        if (enough(x, ch, t, lse, limit, top_p, Cut{mid, V - 1}, zc, ic))
          lo = mid;
        else
          hi = mid - 1;
      }
      if (lo > 0) {  // a logit's key: the first and last ids tied at it
        if (c == 0) {
          tie_lo = V;
          tie_hi = -1;
        }
        __syncthreads();
        int first = V, last = -1;
        for (int i = ch.lo; i < ch.hi; i++) {
          if (rank_key(to_f32(x[i])) == lo) {
            first = min(first, i);
            last = i;
          }
        }
        if (last >= 0) {
          atomicMin(&tie_lo, first);
          atomicMax(&tie_hi, last);
        }
        __syncthreads();
        int a = tie_lo, b = tie_hi;
        while (a < b) {
          const int mid = (a + b) / 2;
          if (enough(x, ch, t, lse, limit, top_p, Cut{lo, mid}, zc, ic))
            b = mid;
          else
            a = mid + 1;
        }
        cut = Cut{lo, a};
      }
      // The kept ids' chunk sums of w (the last probe's reads of zc are behind its second barrier).
      double kept = 0.0;
      for (int i = ch.lo; i < ch.hi; i++) {
        const float xi = to_f32(x[i]);
        if (cut.keeps(rank_key(xi), i)) kept += exp((double)xi / t - m);
      }
      zc[c] = kept;
      __syncthreads();
    }
    if (c == 0) tok = draw(x, zc, V, t, m, cut, u[row]);
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
