//! Every op's backward and the whole model's gradient against finite differences in f64.

use rlhf::check::{self, compare};
use rlhf::util::rng::Rng;

#[test]
fn every_op_and_the_model_pass_gradcheck() {
    let results = check::run_all(1234);
    println!("{}", check::format_table(&results));
    assert!(results.len() >= 31);
    for row in ["gpt2 model", "llama model", "qwen2 model"] {
        assert!(results.iter().any(|r| r.op.starts_with(row)), "no {row} row");
    }
    for r in &results {
        assert!(r.ok, "{} failed: max abs err {:e} > tolerance {:e}", r.op, r.max_abs_err, r.tolerance);
        assert!(r.entries > 0);
    }
}

/// A planted bug: layernorm's backward without the mean-subtraction terms must be caught.
#[test]
fn a_wrong_backward_is_caught() {
    let mut rng = Rng::new(5);
    let (n, c) = (3, 6);
    let x: Vec<f64> = (0..n * c).map(|_| rng.normal()).collect();
    let r: Vec<f64> = (0..n * c).map(|_| rng.normal()).collect();
    let (w, b) = (vec![1.0; c], vec![0.0; c]);
    let loss = |inp: &Vec<Vec<f64>>| {
        let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        rlhf::ops::layernorm::forward(&mut out, &mut m, &mut s, &inp[0], &w, &b, c);
        out.iter().zip(&r).map(|(o, r)| o * r).sum::<f64>()
    };
    let (mut out, mut m, mut s) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    rlhf::ops::layernorm::forward(&mut out, &mut m, &mut s, &x, &w, &b, c);
    // Wrong: dx = rstd * dout * w (drops -mean(g) - xhat*mean(g*xhat)).
    let wrong: Vec<f64> = (0..n * c).map(|i| s[i / c] * r[i] * w[i % c]).collect();
    let res = compare("layernorm (planted bug)", &vec![x.clone()], loss, &vec![wrong], &mut rng);
    assert!(!res.ok, "the wrong gradient passed: {res:?}");
    // And the right one passes through the same harness.
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    rlhf::ops::layernorm::backward(&mut dx, &mut dw, &mut db, &r, &x, &w, &m, &s, c);
    assert!(compare("layernorm", &vec![x], loss, &vec![dx], &mut rng).ok);
}
