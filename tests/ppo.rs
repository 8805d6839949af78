//! PPO: the per-token math against hand-computed values, gradient checks, and real tiny PPO iterations.

use rlhf::ppo::math::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn assert_vec(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "length: got {got:?} want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w, tol), "element {i}: got {g}, want {w} (all: {got:?} vs {want:?})");
    }
}

#[test]
fn rewards_are_kl_penalty_plus_score_at_the_last_token() {
    let (r, kl) = token_rewards(&[-1.0, -2.0, -0.5], &[-1.5, -2.0, -1.0], 2.0, 0.1).unwrap();
    assert_vec(&kl, &[0.5, 0.0, 0.5], 1e-12);
    assert_vec(&r, &[-0.05, 0.0, 1.95], 1e-12);
    assert!(token_rewards(&[], &[], 1.0, 0.1).is_err());
    assert!(token_rewards(&[-1.0], &[-1.0, -2.0], 1.0, 0.1).is_err());
}

#[test]
fn gae_matches_hand_computation() {
    // gamma 1, lambda 0.5: deltas 1.5, 0.5, 0.5 (v_3 = 0), A = 1.875, 0.75, 0.5
    let (a, ret) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 1.0, 0.5).unwrap();
    assert_vec(&a, &[1.875, 0.75, 0.5], 1e-12);
    assert_vec(&ret, &[2.375, 1.75, 2.0], 1e-12);
    // lambda 1: A_t = (sum of rewards from t) - v_t (Monte Carlo)
    let (a, _) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 1.0, 1.0).unwrap();
    assert_vec(&a, &[2.5, 1.0, 0.5], 1e-12);
    // gamma 0.9, lambda 0.95, two tokens: delta_1 = 1 - 0.2 = 0.8; delta_0 = 0 + 0.9*0.2 - 0.1 = 0.08;
    // A_0 = 0.08 + 0.855 * 0.8 = 0.764
    let (a, _) = gae(&[0.0, 1.0], &[0.1, 0.2], 0.9, 0.95).unwrap();
    assert_vec(&a, &[0.764, 0.8], 1e-12);
    assert!(gae(&[1.0], &[1.0, 2.0], 1.0, 0.95).is_err());
}

#[test]
fn whitening_uses_every_valid_token_of_the_batch() {
    let mut x = vec![vec![1.0, 2.0], vec![3.0]];
    whiten(&mut x);
    let s = (2.0f64 / 3.0 + 1e-8).sqrt();
    assert_vec(&x[0], &[-1.0 / s, 0.0], 1e-12);
    assert_vec(&x[1], &[1.0 / s], 1e-12);
    let (m, v) = mean_var(&x);
    assert!(close(m, 0.0, 1e-12) && close(v, 1.0, 1e-6), "mean {m} var {v}");
}

#[test]
fn clipped_policy_loss_and_gradient_by_hand() {
    let old = [-2.0, -1.0, -3.0, -0.5];
    let ratios = [1.5f64, 0.5, 1.1, 1.5];
    let logp: Vec<f64> = old.iter().zip(ratios).map(|(o, r)| o + r.ln()).collect();
    let adv = [1.0, 1.0, -2.0, -1.0];
    let p = policy_loss(&logp, &old, &adv, 0.2).unwrap();
    // per token max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 2.2 (tie), 1.5 -> mean 0.5
    assert!(close(p.loss, 0.5, 1e-12), "loss {}", p.loss);
    assert_vec(&p.grad, &[0.0, -0.125, 0.55, 0.375], 1e-12);
    assert!(close(p.clip_frac, 0.75, 1e-12));
    let k3: f64 = ratios.iter().map(|r| (r - 1.0) - r.ln()).sum::<f64>() / 4.0;
    assert!(close(p.approx_kl, k3, 1e-12) && close(k3, 0.0967267, 1e-6), "approx kl {} vs {k3}", p.approx_kl);
    assert!(close(p.max_ratio_dev, 0.5, 1e-12));
    // At the rollout policy the ratio is 1: the loss is -mean(A) and nothing clips.
    let p = policy_loss(&old, &old, &adv, 0.2).unwrap();
    assert!(close(p.loss, 0.25, 1e-12) && p.clip_frac == 0.0 && p.approx_kl == 0.0);
    assert!(policy_loss(&[], &[], &[], 0.2).is_err());
}

#[test]
fn clipped_value_loss_and_gradient_by_hand() {
    let (l, g, cf) = value_loss(&[1.0, 1.0, 0.1], &[0.5, 0.5, 0.0], &[2.0, 0.0, 1.0], 0.2).unwrap();
    // (1.69 clipped, 1.0, 0.81) -> 0.5 * 3.5 / 3
    assert!(close(l, 3.5 / 6.0, 1e-12), "loss {l}");
    assert_vec(&g, &[0.0, 1.0 / 3.0, -0.3], 1e-12);
    assert!(close(cf, 1.0 / 3.0, 1e-12));
}

#[test]
fn explained_variance_by_hand() {
    assert!(close(explained_variance(&[1.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 2.0 / 3.0, 1e-12));
    assert!(close(explained_variance(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0, 1e-12));
    assert!(explained_variance(&[1.0, 2.0], &[1.0, 1.0]).is_nan());
}

#[test]
fn adaptive_kl_controller_steps_by_hand() {
    let mut k = KlController::adaptive(0.2, 6.0, 10000.0);
    k.update(9.0, 64); // error 0.5 clipped to 0.2: beta * (1 + 0.2 * 64 / 10000)
    assert!(close(k.beta, 0.200256, 1e-15), "{}", k.beta);
    k.update(3.0, 100); // error -0.5 clipped to -0.2
    assert!(close(k.beta, 0.200256 * 0.998, 1e-15), "{}", k.beta);
    k.update(6.6, 10000); // error 0.1 within the clip
    assert!(close(k.beta, 0.200256 * 0.998 * 1.1, 1e-15), "{}", k.beta);
    let mut f = KlController::fixed(0.05);
    f.update(100.0, 64);
    assert_eq!(f.beta, 0.05);
}

#[test]
fn ppo_gradchecks_pass() {
    let results = rlhf::ppo::gradchecks();
    assert_eq!(results.len(), 3);
    for r in &results {
        assert!(r.ok && r.entries > 0, "{r:?}");
    }
}
