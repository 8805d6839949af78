//! Small statistics over samples.

/// The mean of `x`; NaN for no samples (a mean of nothing is not 0).
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        f64::NAN
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// The mean of per-group values and the half-width of its normal-approximation 95% confidence interval,
/// 1.96 s / sqrt(n) with s the sample standard deviation of the group values (groups are the independent
/// units: in an evaluation, prompts, whose several samples are correlated). NaN half-width for n < 2.
pub fn mean_ci95(groups: &[f64]) -> (f64, f64) {
    let n = groups.len();
    let m = mean(groups);
    if n < 2 {
        return (m, f64::NAN);
    }
    let var = groups.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
    (m, 1.96 * (var / n as f64).sqrt())
}

/// log(1 + e^x), computed stably.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// 1 / (1 + e^-x), computed stably.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
