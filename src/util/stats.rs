//! Small statistics over samples.

/// The mean of `x`; NaN for no samples (a mean of nothing is not 0).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        f64::NAN
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}
