//! Choosing one token from a row of logits: the reference of the device sampler (`Backend::sample`,
//! `kernels/sample.cu`), which makes the same choice for the same logits and uniform number.
//!
//! A row x [V] (f32; bf16 storage is read exactly as f32, the f64 CPU backend's rows rounded to f32),
//! temperature t (0 = greedy), top-k k (0 = off), top-p p (1 = off) and u, uniform in [0, 1) (drawn on the
//! host, one per row):
//!   z_i = x_i / t in f64 (t = 1 when greedy),  m = max_i z_i,  w_i = exp(z_i - m)
//!   S = sum_i w_i (in the blocked order below),  lse = m + ln S
//!   logprob = z_tok - lse, rounded to f32: under the temperature-scaled distribution, before any filtering
//!   (what PPO's ratio needs).
//! The token:
//! - greedy: the first maximum of z (ties to the lower id, as torch.argmax). u is not used.
//! - plain (no top-k, no top-p): the inverse CDF in id order, the first id of weight w > 0 at which the
//!   running sum of w reaches u * S. O(V): one pass for the sums, one for the draw.
//! - filtered: the ids ranked by z descending, ties to the lower id (a total order: [`rank_key`] of the
//!   logit, then the id). The kept ids are those at or above a [`Cut`] in that ranking: the cut keeping the
//!   fewest ids that still keeps at least k (top-k) or ids whose probabilities exp(z - lse), summed in the
//!   blocked order, reach p (top-p): the smaller of the two sets, every id when neither is reached. Both
//!   tests can only turn true as a cut keeps more ids, so the cut is found by bisection: on the key (at
//!   most 32 probes), then on the id among the ids tied at that key (none for distinct logits). Each probe
//!   is one O(V) pass, whatever the size of the nucleus. Then the plain draw over the kept ids' w (an id
//!   below the cut has weight 0 there, and is never chosen).
//!
//! The blocked order, which the kernel follows term by term: the ids are cut into [`CHUNKS`] contiguous
//! chunks of L = ceil(V / CHUNKS) ids (chunk c holds ids cL .. min((c+1)L, V)); a chunk's sum s_c adds its w
//! in id order, and the chunk sums are added in chunk order: P_c = s_0 + ... + s_{c-1}, S = P_CHUNKS. The
//! draw, with target = u * S, takes the first chunk c with s_c > 0 and P_c + s_c >= target, then in it the
//! running sum P_c + w_i in id order, the first id of weight > 0 where it reaches the target (the chunk's
//! last such id if rounding leaves it short). In the kernel each thread owns one chunk and thread 0 adds
//! the chunk sums in order, so every sum is formed from the same f64 terms in the same order and both choose
//! the same token. (This reference starts the cut's bisection closer, from a key known to be enough, so
//! that its probes read only the ids above it: the cut found is the same.) What can still differ is `exp`
//! and `ln` themselves: in the simulator both sides call the host's libm, on a GPU CUDA's f64 `exp` (within
//! 1 ulp) may differ from it in the last bit, which changes a choice only when the target falls within
//! ~1e-16 (relative) of a chunk or id boundary, or a top-p mass within ~1e-16 of p.

use super::Float;
use anyhow::{anyhow, Result};

/// Chunks of the blocked sums (the kernel's threads per row: `SAMPLE_BLOCK`, asserted equal at compile time).
pub const CHUNKS: usize = 256;

/// How a token is chosen from the logits (the sampler's part of `SampleConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (> 0); 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f64,
}

impl Sampling {
    /// Whether a draw uses its uniform number (not greedy).
    pub fn draws(&self) -> bool {
        self.temperature > 0.0
    }
}

/// The token chosen from the row `x` [V] with uniform `u`, and its temperature-scaled log-probability (see
/// the module docs). Non-finite logits (a diverged model) are an error naming the first, not a token.
pub fn pick<F: Float>(x: &[F], s: &Sampling, u: f64) -> Result<(u32, f32)> {
    if let Some((i, &x)) = x.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(non_finite(i, x.f64() as f32));
    }
    let (v, t) = (x.len(), if s.draws() { s.temperature } else { 1.0 });
    // Nothing is stored per id on the plain and greedy paths: z and w are recomputed where needed (the same
    // f64 values each time).
    let z = |i: usize| (x[i].f64() as f32) as f64 / t;
    let m = (0..v).map(z).fold(f64::NEG_INFINITY, f64::max);
    let w = |i: usize| (z(i) - m).exp();
    let len = v.div_ceil(CHUNKS);
    let sums = chunk_sums(w, v, len);
    let total = sums.iter().fold(0.0, |a, &b| a + b);
    let lse = m + total.ln();
    let tok = if !s.draws() {
        (0..v).fold(0, |best, i| if z(i) > z(best) { i } else { best })
    } else if s.top_k == 0 && s.top_p >= 1.0 {
        draw(w, v, len, &sums, u)
    } else {
        let keys: Vec<u32> = (0..v).map(|i| rank_key(x[i].f64() as f32)).collect();
        let top_k = (s.top_k > 0 && s.top_k < v).then_some(s.top_k);
        let top_p = (s.top_p < 1.0).then_some(s.top_p);
        // The search may start from any key whose cut is enough; the closer, the fewer ids each probe reads:
        // the k-th largest key (top-k), or a key that very likely holds mass p (top-p; checked).
        let floor_k = top_k.map_or(0, |k| kth_largest(&keys, k));
        // The probabilities, of the ids the search can keep (the others are never read).
        let q: Vec<f64> = match top_p {
            Some(_) => (0..v).map(|i| if keys[i] >= floor_k { (z(i) - lse).exp() } else { 0.0 }).collect(),
            None => vec![],
        };
        let floor_p = top_p.map_or(0, |p| mass_floor(&keys, &q, p));
        let enough = |(n, mass): (usize, f64)| top_k.is_some_and(|k| n >= k) || top_p.is_some_and(|p| mass >= p);
        let mut probe = Probe::new(&keys, &q, len, floor_k.max(floor_p));
        if !enough(probe.count(Cut { key: probe.floor, last: v - 1 })) {
            probe = Probe::new(&keys, &q, len, floor_k);
        }
        let cut = Cut::search(&keys, probe.floor, |cut| enough(probe.count(cut)));
        let kw = |i: usize| if cut.keeps(keys[i], i) { w(i) } else { 0.0 };
        draw(kw, v, len, &chunk_sums(kw, v, len), u)
    };
    Ok((tok as u32, (z(tok) - lse) as f32))
}

/// The filters' rank of a logit: larger for a larger logit (z = x / t is strictly increasing in the f32 x,
/// so this orders the ids by z). The sign-folded bits of x (-0 as +0); a finite x never gives 0.
pub fn rank_key(x: f32) -> u32 {
    let b = (x + 0.0).to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Where the filters cut the ranking: an id with key k is kept when k > `key`, or k == `key` and its id is
/// at most `last`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cut {
    pub key: u32,
    pub last: usize,
}

impl Cut {
    pub fn keeps(&self, key: u32, id: usize) -> bool {
        key > self.key || (key == self.key && id <= self.last)
    }

    /// The cut keeping the fewest ids that is still `enough`, given that `enough` stays true as a cut keeps
    /// more ids; every id when no cut is. Bisection on the key (`enough` of a cut that keeps all ties of
    /// its key) over [floor, the largest key], where `floor` is 0 or a key whose cut is enough (the result
    /// does not depend on it), then on the last id among the ties of the key found.
    fn search(keys: &[u32], floor: u32, mut enough: impl FnMut(Cut) -> bool) -> Cut {
        let all = Cut { key: 0, last: keys.len() - 1 };
        let (mut lo, mut hi) = (floor, keys.iter().copied().max().unwrap_or(0));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if enough(Cut { key: mid, ..all }) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        // The largest key whose cut is enough is a logit's key (else the next key up would keep the same
        // ids, and be enough too); 0 is none.
        if lo == 0 {
            return all;
        }
        let (mut a, mut b) =
            (keys.iter().position(|&k| k == lo).unwrap(), keys.iter().rposition(|&k| k == lo).unwrap());
        while a < b {
            let mid = (a + b) / 2;
            if enough(Cut { key: lo, last: mid }) {
                b = mid;
            } else {
                a = mid + 1;
            }
        }
        Cut { key: lo, last: a }
    }
}

/// The ids a search can still keep (key at or above `floor`), in id order, for the cut's probes.
struct Probe<'a> {
    ids: Vec<usize>,
    keys: &'a [u32],
    q: &'a [f64],
    len: usize,
    floor: u32,
}

impl<'a> Probe<'a> {
    fn new(keys: &'a [u32], q: &'a [f64], len: usize, floor: u32) -> Probe<'a> {
        Probe { ids: (0..keys.len()).filter(|&i| keys[i] >= floor).collect(), keys, q, len, floor }
    }

    /// How many ids `cut` keeps, and their probabilities summed in the blocked order (an id outside `ids`
    /// adds 0 to its chunk, exactly as if added; `q` empty: no sum). `cut.key` must be at least `floor`.
    fn count(&self, cut: Cut) -> (usize, f64) {
        let mut sums = [0.0; CHUNKS];
        let mut n = 0;
        for &i in self.ids.iter().filter(|&&i| cut.keeps(self.keys[i], i)) {
            n += 1;
            if let Some(q) = self.q.get(i) {
                sums[i / self.len] += q;
            }
        }
        (n, sums.iter().fold(0.0, |a, &b| a + b))
    }
}

/// The k-th largest of `keys`.
fn kth_largest(keys: &[u32], k: usize) -> u32 {
    let mut keys = keys.to_vec();
    *keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a)).1
}

/// A key whose cut very likely holds probability p (checked exactly by the caller): the mass `q` summed
/// per bucket of 2^18 keys (3% of a logit's magnitude), buckets from the top until the sum passes p with
/// a margin far above the rounding of these sums (~V * 1e-16); 0 if it never does.
fn mass_floor(keys: &[u32], q: &[f64], p: f64) -> u32 {
    let mut bucket = vec![0.0; 1 << 14];
    for (&k, &q) in keys.iter().zip(q) {
        bucket[(k >> 18) as usize] += q;
    }
    let mut mass = 0.0;
    for b in (0..bucket.len()).rev() {
        mass += bucket[b];
        if mass >= p + 1e-9 {
            return (b as u32) << 18;
        }
    }
    0
}

/// The error for a non-finite logit `x` at token `i` (a diverged model).
pub fn non_finite(i: usize, x: f32) -> anyhow::Error {
    anyhow!("the model's logit for token {i} is {x}: its weights or activations are not finite")
}

/// The chunk sums of `w(i)` over the `v` ids in chunks of `len`, each in id order (module docs).
fn chunk_sums(w: impl Fn(usize) -> f64, v: usize, len: usize) -> Vec<f64> {
    (0..v).step_by(len).map(|c| (c..(c + len).min(v)).fold(0.0, |a, i| a + w(i))).collect()
}

/// The inverse-CDF draw in the blocked order (module docs) over the weights `w(i)` of the `v` ids (0 for an
/// id that may not be chosen), in chunks of `len` with sums `sums`, at u times their total: the first chunk
/// with weight whose prefix reaches the target (at the latest the last chunk with weight: its prefix adds
/// the chunk sums as the total did, and u < 1), then in it the first id of weight whose running sum
/// reaches it, or its last id of weight if rounding leaves the sum short.
fn draw(w: impl Fn(usize) -> f64, v: usize, len: usize, sums: &[f64], u: f64) -> usize {
    let target = u * sums.iter().fold(0.0, |a, &b| a + b);
    let (mut at, mut before) = ((0, 0.0), 0.0);
    for (c, &s) in sums.iter().enumerate() {
        if s > 0.0 {
            at = (c, before);
            if before + s >= target {
                break;
            }
        }
        before += s;
    }
    let (c, mut run) = at;
    let mut last = c * len;
    for i in c * len..((c + 1) * len).min(v) {
        let wi = w(i);
        if wi > 0.0 {
            run += wi;
            last = i;
            if run >= target {
                break;
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::rng::Rng;

    /// A row of `v` logits (std 3) with ties planted at the top and in the middle of the ranking.
    fn row(v: usize, seed: u64) -> Vec<f32> {
        let mut x: Vec<f32> = Rng::new(seed).normals(v, 3.0).iter().map(|&x| x as f32).collect();
        let top = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        (x[v / 3], x[v - 1], x[7]) = (top, top, x[5]);
        x
    }

    /// The kept set by the definition, sorting: the ids in descending logit (ties to the lower id), the
    /// first k, of those the shortest prefix whose probabilities, added in that order, reach p.
    fn kept_by_sorting(x: &[f32], s: &Sampling) -> Vec<usize> {
        let z: Vec<f64> = x.iter().map(|&x| x as f64 / s.temperature).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        let mut ids: Vec<usize> = (0..x.len()).collect();
        ids.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
        if s.top_k > 0 {
            ids.truncate(s.top_k);
        }
        let mut mass = 0.0;
        let n = ids.iter().position(|&i| {
            mass += (z[i] - lse).exp();
            mass >= s.top_p
        });
        ids.truncate(n.map_or(ids.len(), |n| n + 1));
        ids.sort();
        ids
    }

    /// Over a grid of uniforms, every draw is a kept id, and every kept id is drawn as often as its share
    /// of the kept probability says (the inverse CDF over a grid of N points gives each id its mass * N,
    /// within 1): top-k, top-p, both (the smaller set), against the sorting definition, on rows with ties.
    #[test]
    fn filtered_draws_cover_exactly_the_kept_ids_in_proportion() {
        let grid = 4000;
        for (seed, v) in [(1, 1000), (2, 77), (3, 3000)] {
            let x = row(v, seed);
            for s in [
                Sampling { temperature: 1.0, top_k: 7, top_p: 1.0 },
                Sampling { temperature: 1.0, top_k: 2, top_p: 1.0 }, // two of the three tied maxima
                Sampling { temperature: 1.0, top_k: 0, top_p: 0.9 },
                Sampling { temperature: 0.7, top_k: 0, top_p: 0.5 },
                Sampling { temperature: 1.3, top_k: 20, top_p: 0.8 },
                Sampling { temperature: 1.0, top_k: 3, top_p: 0.999 },
                Sampling { temperature: 1.0, top_k: v, top_p: 1.0 - 1e-15 },
            ] {
                let want = kept_by_sorting(&x, &s);
                let z: Vec<f64> = x.iter().map(|&x| x as f64 / s.temperature).collect();
                let mass: f64 = want.iter().map(|&i| z[i].exp()).sum();
                let mut count = vec![0usize; v];
                for j in 0..grid {
                    let (id, lp) = pick(&x, &s, (j as f64 + 0.5) / grid as f64).unwrap();
                    count[id as usize] += 1;
                    assert!(lp <= 0.0);
                }
                let drawn: Vec<usize> = (0..v).filter(|&i| count[i] > 0).collect();
                let expect = |i: usize| z[i].exp() / mass * grid as f64;
                assert!(drawn.iter().all(|i| want.binary_search(i).is_ok()), "V={v} {s:?}: drew outside {want:?}");
                for &i in &want {
                    assert!(
                        (count[i] as f64 - expect(i)).abs() <= 1.0 + 1e-9,
                        "V={v} {s:?} id {i}: {} vs {}",
                        count[i],
                        expect(i)
                    );
                }
            }
        }
    }

    /// The cut's two ends: top-p reached by the top id alone keeps only it (the first of tied maxima when
    /// they tie); a p above the total mass keeps every id; top-k 1 is the first maximum; a uniform of 0
    /// never draws an id of weight 0.
    #[test]
    fn cut_edges() {
        let x = [0.0f32, 30.0, 30.0, -800.0, 5.0];
        let one = |top_k, top_p, u| pick(&x, &Sampling { temperature: 1.0, top_k, top_p }, u).unwrap().0;
        assert_eq!(one(0, 0.3, 0.99), 1, "p below the top id's mass (0.5): the first of the tied maxima");
        assert_eq!(one(1, 1.0, 0.99), 1);
        assert_eq!(one(0, 0.6, 0.99), 2, "both maxima");
        // -800 underflows to weight 0 (and is the last ranked): never drawn, even at u = 0 with every id kept.
        let y = [-800.0f32, 1.0, 1.0];
        assert_eq!(pick(&y, &Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 }, 0.0).unwrap().0, 1);
        assert_eq!(pick(&y, &Sampling { temperature: 1.0, top_k: 3, top_p: 1.0 }, 0.0).unwrap().0, 1);
        assert_eq!(pick(&y, &Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 - 1e-16 }, 0.0).unwrap().0, 1);
        assert_eq!(rank_key(-0.0), rank_key(0.0));
        let keys: Vec<u32> = [f32::MIN, -1.0, -0.0, 1e-30, 2.0, f32::MAX].iter().map(|&x| rank_key(x)).collect();
        assert!(keys.windows(2).all(|k| k[0] < k[1]) && keys[0] > 0, "{keys:?}");
    }
}
