//! Properties of the CPU reference ops that the finite-difference rows (`rlhf::check`) do not cover: grouped-query
//! attention against multi-head attention on repeated kv heads, and the bands of Llama 3's RoPE scaling.

use rlhf::ops::attention;
use rlhf::ops::rope::{Llama3Scaling, Rope};
use rlhf::util::rng::Rng;

/// Grouped-query attention is multi-head attention on the kv heads repeated over their groups (Hugging
/// Face's `repeat_kv`): the same output and dq, and a kv head's dk, dv are the sums of its copies' gradients.
#[test]
fn gqa_is_mha_on_repeated_kv_heads() {
    let (b, t, nh, nkv, hs) = (2, 7, 6, 2, 4);
    let (c, group) = (nh * hs, nh / nkv);
    let w = c + 2 * nkv * hs;
    let mut rng = Rng::new(9);
    let qkv = rng.normals(b * t * w, 1.0);
    let dout = rng.normals(b * t * c, 1.0);
    // the MHA layout [q | k | v], head h's k and v copied from kv head h / group
    let mut full = vec![0.0; b * t * 3 * c];
    for r in 0..b * t {
        for h in 0..nh {
            for d in 0..hs {
                let g = h / group;
                full[r * 3 * c + h * hs + d] = qkv[r * w + h * hs + d];
                full[r * 3 * c + c + h * hs + d] = qkv[r * w + c + g * hs + d];
                full[r * 3 * c + 2 * c + h * hs + d] = qkv[r * w + c + (nkv + g) * hs + d];
            }
        }
    }
    let pos0 = vec![0u32; b];
    let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
    let (mut out_full, mut lse_full) = (out.clone(), lse.clone());
    attention::forward(&mut out, &mut lse, &qkv, &qkv, &pos0, b, t, t, c, nh, nkv);
    attention::forward(&mut out_full, &mut lse_full, &full, &full, &pos0, b, t, t, c, nh, nh);
    let close = |a: f64, e: f64| (a - e).abs() <= 1e-12 * (1.0 + e.abs());
    assert!(out.iter().zip(&out_full).chain(lse.iter().zip(&lse_full)).all(|(&a, &e)| close(a, e)));
    let (mut d, mut d_full) = (vec![f64::NAN; b * t * w], vec![f64::NAN; b * t * 3 * c]);
    attention::backward(&mut d, &dout, &qkv, &out, &lse, b, t, c, nh, nkv);
    attention::backward(&mut d_full, &dout, &full, &out_full, &lse_full, b, t, c, nh, nh);
    for r in 0..b * t {
        for dd in 0..hs {
            for h in 0..nh {
                assert!(close(d[r * w + h * hs + dd], d_full[r * 3 * c + h * hs + dd]), "dq row {r} head {h}");
            }
            for g in 0..nkv {
                let sum =
                    |sec: usize| (g * group..(g + 1) * group).map(|h| d_full[r * 3 * c + sec * c + h * hs + dd]).sum();
                assert!(close(d[r * w + c + g * hs + dd], sum(1)), "dk row {r} kv head {g}");
                assert!(close(d[r * w + c + (nkv + g) * hs + dd], sum(2)), "dv row {r} kv head {g}");
            }
        }
    }
}

/// Llama 3.2's scaling (factor 32, low 1, high 4, L 8192) on head dim 64, theta 500000: the three bands.
#[test]
fn llama3_scaling_bands() {
    let s = Llama3Scaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    let (plain, scaled) = (Rope::new(500000.0, 64, None), Rope::new(500000.0, 64, Some(s)));
    assert_eq!(plain.inv_freq[0], 1.0);
    for (i, (&f, &g)) in plain.inv_freq.iter().zip(&scaled.inv_freq).enumerate() {
        let wavelen = 2.0 * std::f64::consts::PI / f;
        if wavelen < 8192.0 / 4.0 {
            assert_eq!(g, f, "{i}: high frequencies are kept");
        } else if wavelen > 8192.0 {
            assert!((g - f / 32.0).abs() <= 1e-15 * f, "{i}: low frequencies are divided by the factor");
        } else {
            assert!(g < f && g > f / 32.0, "{i}: the band in between is interpolated");
        }
    }
    assert!(scaled.inv_freq.iter().zip(&plain.inv_freq).any(|(g, f)| g < f && *g > f / 32.0));
}
