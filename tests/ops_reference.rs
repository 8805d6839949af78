//! Properties of the CPU reference ops that the finite-difference rows (`rlhf::check`) do not cover: the bands of
//! Llama 3's RoPE scaling.

use rlhf::ops::rope::{Llama3Scaling, Rope};

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
