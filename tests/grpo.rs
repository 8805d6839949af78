//! GRPO and RLOO: the advantages and the loss against hand-computed values, the gradient checks, and real
//! tiny runs (learning from a judge, resume, refusals, the kernels in the simulator against the CPU).

use rlhf::backend::{Backend, Cpu};
use rlhf::model::{Config, Decoder, ScalarHead, ScalarModel};
use rlhf::pipeline::grpo::math::*;
use rlhf::pipeline::grpo::{train, GrpoConfig, Hooks, Reward};
use rlhf::pipeline::rollout::GoldHook;
use rlhf::util::rng::Rng;
use std::path::Path;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn advantages_by_hand() {
    let r = [1.0, 2.0, 3.0, 6.0];
    // mean 3; sample std sqrt((4 + 1 + 0 + 9) / 3)
    let s = (14.0f64 / 3.0).sqrt() + 1e-4;
    let a = group_advantages(&r, Baseline::Group, true).unwrap();
    for (x, want) in a.iter().zip([-2.0 / s, -1.0 / s, 0.0, 3.0 / s]) {
        assert!(close(*x, want), "{a:?}");
    }
    assert_eq!(group_advantages(&r, Baseline::Group, false).unwrap(), vec![-2.0, -1.0, 0.0, 3.0]);
    // RLOO: r_i minus the mean of the other three.
    let loo = group_advantages(&r, Baseline::Loo, false).unwrap();
    for (i, x) in loo.iter().enumerate() {
        let others = (r.iter().sum::<f64>() - r[i]) / 3.0;
        assert!(close(*x, r[i] - others), "{loo:?}");
    }
    // Equal rewards teach nothing, whatever the scaling.
    assert!(group_advantages(&[0.5; 3], Baseline::Group, true).unwrap().iter().all(|&x| x == 0.0));
    let e = group_advantages(&[1.0], Baseline::Group, true).unwrap_err().to_string();
    assert!(e.contains("--group"), "{e}");
}

#[test]
fn token_weights_and_the_loss_at_the_start_by_hand() {
    let lens = [2usize, 4];
    let sum_of = |w: &[f64]| (w[..2].iter().sum::<f64>(), w[2..].iter().sum::<f64>());
    // GRPO: each answer weighs 1/M whatever its length; token: each token 1/6; constant: 1/(M Tmax).
    assert_eq!(sum_of(&token_weights(&lens, LossNorm::Answer, 8)), (0.5, 0.5));
    let (a, b) = sum_of(&token_weights(&lens, LossNorm::Token, 8));
    assert!(close(a, 2.0 / 6.0) && close(b, 4.0 / 6.0));
    assert_eq!(token_weights(&lens, LossNorm::Constant, 8), vec![1.0 / 16.0; 6]);
    // At the start (policy = old = reference) the ratio is 1 and k3 is 0: L = -sum_i A_i / M, and
    // dL/dlogp_t = -c_t A_i (the k3 gradient 1 - exp(0) vanishes).
    let lp = vec![vec![-1.0, -2.0], vec![-0.5, -0.1, -3.0, -1.0]];
    let adv = [1.5, -0.5];
    let l = grpo_loss(&lp, &lp, &lp, &adv, 0.2, 0.04, LossNorm::Answer, 8).unwrap();
    assert!(close(l.loss, -(1.5 - 0.5) / 2.0), "{}", l.loss);
    assert!(close(l.grad[0][1], -1.5 / 4.0) && close(l.grad[1][3], 0.5 / 8.0));
    assert_eq!((l.k3, l.max_ratio_dev, l.clip_frac), (0.0, 0.0, 0.0));
    // k3 by hand: ref - logp = d gives exp(d) - d - 1 per token.
    let r = vec![vec![-1.5, -2.0], vec![-0.5, -0.1, -3.0, -1.0]];
    let l = grpo_loss(&lp, &lp, &r, &[0.0, 0.0], 0.2, 2.0, LossNorm::Answer, 8).unwrap();
    let k = (-0.5f64).exp() + 0.5 - 1.0;
    assert!(close(l.loss, 2.0 * k / 4.0) && close(l.k3, k / 6.0), "{} {}", l.loss, l.k3);
    assert!(grpo_loss(&lp, &lp[..1], &lp, &adv, 0.2, 0.0, LossNorm::Answer, 8).is_err());
}

#[test]
fn grpo_gradchecks_pass() {
    let results = rlhf::check::losses::grpo();
    assert_eq!(results.len(), 4);
    eprintln!("{}", rlhf::check::format_table(&results));
    for r in &results {
        assert!(r.ok && r.entries > 0, "{r:?}");
    }
}

// ---- the trainer on tiny random models ----

type Be = Cpu<f32>;
const STOP: u32 = 1;
const PAD: u32 = 0;

fn cfg() -> Config {
    Config::gpt2(1, 2, 16, 16, 32)
}

fn prompts(n: usize) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(9);
    (0..n).map(|_| (0..3 + rng.below(4)).map(|_| 2 + rng.below(14) as u32).collect()).collect()
}

fn grpo_cfg(out: &Path, iterations: u64) -> GrpoConfig {
    let mut c = GrpoConfig::new(out.to_owned(), STOP, PAD);
    c.iterations = iterations;
    c.prompts_per_iteration = 3;
    c.group = 4;
    c.minibatch = 6;
    c.max_new_tokens = 6;
    c.save_every = 2;
    c.lr = 3e-3;
    c
}

/// The ids as text, for the judge: "3 7 1".
fn ids_text(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// A verifiable reward: the fraction of the answer's tokens that are id 7.
fn sevens(pairs: &[(String, String)]) -> anyhow::Result<Vec<f64>> {
    Ok(pairs
        .iter()
        .map(|(_, a)| {
            let t: Vec<&str> = a.split_whitespace().collect();
            t.iter().filter(|&&x| x == "7").count() as f64 / t.len().max(1) as f64
        })
        .collect())
}

/// A run scored by the `sevens` judge.
fn judged<B: Backend>(
    be: &B,
    c: GrpoConfig,
    sft: &Decoder<B>,
    resume: bool,
) -> anyhow::Result<rlhf::pipeline::grpo::GrpoSummary> {
    let mut judge = sevens;
    let hook = GoldHook { judge: &mut judge, prompt_text: &ids_text, unended: 0.0 };
    let hooks = Hooks { decode: Some(&ids_text), ..Hooks::default() };
    train(be, c, &prompts(6), sft, sft, Reward::Judge(hook), hooks, resume)
}

/// The metrics log without its wall-clock fields.
fn metrics(out: &Path) -> Vec<serde_json::Value> {
    let mut recs = rlhf::pipeline::metrics::read(&out.join("metrics.jsonl")).unwrap();
    for r in &mut recs {
        let o = r.as_object_mut().unwrap();
        o.remove("rollout_s");
        o.remove("iteration_s");
    }
    recs
}

fn series(out: &Path, key: &str) -> Vec<f64> {
    metrics(out).iter().map(|r| r[key].as_f64().unwrap()).collect()
}

#[test]
fn grpo_learns_a_verifiable_reward_from_a_judge() {
    let be = Be::new();
    let sft = Decoder::init(&be, cfg(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = grpo_cfg(&out, 30);
    c.no_eos_penalty = 0.0;
    c.beta = 0.0;
    judged(&be, c, &sft, false).unwrap();
    let gold = series(&out, "raw_score");
    let (first, last) = (gold[..5].iter().sum::<f64>() / 5.0, gold[25..].iter().sum::<f64>() / 5.0);
    // A random 16-id policy emits id 7 about 1/16 of the time.
    assert!(first < 0.2 && last > first + 0.2, "fraction of 7s: first iterations {first:.3}, last {last:.3}");
    // The first minibatch of every iteration sees the policy that sampled it: ratio 1 up to rounding.
    assert!(series(&out, "first_ratio_dev").iter().all(|&d| d < 1e-4));
    let kl = series(&out, "kl");
    assert!(kl[29] > kl[0], "the policy moved away from the reference: KL {:.3} -> {:.3}", kl[0], kl[29]);
}

#[test]
fn rloo_and_kl_in_reward_run_and_the_kl_penalty_holds_the_policy_back() {
    let be = Be::new();
    let sft = Decoder::init(&be, cfg(), 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, beta: f64| {
        let out = dir.path().join(name);
        let mut c = grpo_cfg(&out, 12);
        c.baseline = Baseline::Loo;
        c.kl_in = KlIn::Reward;
        c.beta = beta;
        judged(&be, c, &sft, false).unwrap();
        series(&out, "kl").iter().rev().take(4).sum::<f64>() / 4.0
    };
    let (free, held) = (run("free", 0.0), run("held", 1.0));
    assert!(held < free, "KL with beta 1 ({held:.3}) should stay below KL without ({free:.3})");
}

#[test]
fn paused_and_resumed_equals_unbroken_and_changes_are_refused() {
    let be = Be::new();
    let sft = Decoder::init(&be, cfg(), 1).unwrap();
    let rm = ScalarModel { trunk: Decoder::init(&be, cfg(), 2).unwrap(), head: ScalarHead::init(&be, 16, 3).unwrap() };
    let run = |c: GrpoConfig, resume: bool| {
        train(&be, c, &prompts(6), &sft, &sft, Reward::Model(&rm), Hooks::default(), resume)
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, k) = (dir.path().join("a"), dir.path().join("k"));
    run(grpo_cfg(&a, 4), false).unwrap();
    run(grpo_cfg(&k, 2), false).unwrap();
    let mut changed = grpo_cfg(&k, 4);
    changed.beta = 0.5;
    let e = run(changed, true).unwrap_err().to_string();
    assert!(e.contains("--beta"), "{e}");
    let e = run(grpo_cfg(&k, 4), false).unwrap_err().to_string();
    assert!(e.contains("--resume"), "a fresh start over a run is refused: {e}");
    run(grpo_cfg(&k, 4), true).unwrap();
    assert_eq!(metrics(&a), metrics(&k));
    let w = |out: &Path| {
        rlhf::checkpoint::load(&rlhf::checkpoint::run_dir::latest(out).unwrap().unwrap()).unwrap().flat_params()
    };
    assert_eq!(w(&a), w(&k), "resumed weights differ from the unbroken run's");
    // Another reward model is another run.
    let rm2 = ScalarModel { trunk: Decoder::init(&be, cfg(), 5).unwrap(), head: ScalarHead::init(&be, 16, 3).unwrap() };
    let e = train(&be, grpo_cfg(&k, 6), &prompts(6), &sft, &sft, Reward::Model(&rm2), Hooks::default(), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--reward"), "{e}");
}

#[test]
fn settings_out_of_range_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let base = grpo_cfg(&dir.path().join("x"), 2);
    let cases: [(&str, GrpoConfig); 5] = [
        ("--group", GrpoConfig { group: 1, ..base.clone() }),
        ("--no-scale-std", GrpoConfig { no_scale_std: true, baseline: Baseline::Loo, ..base.clone() }),
        ("--beta", GrpoConfig { beta: -1.0, ..base.clone() }),
        ("--cliprange", GrpoConfig { cliprange: 0.0, ..base.clone() }),
        ("--temperature", GrpoConfig { temperature: 0.0, ..base.clone() }),
    ];
    for (flag, c) in cases {
        let e = c.validate(16).unwrap_err().to_string();
        assert!(e.contains(flag), "{flag}: {e}");
    }
    // A prompt that leaves no room for the answer.
    let be = Be::new();
    let sft = Decoder::init(&be, cfg(), 1).unwrap();
    let long = vec![vec![3u32; 30]];
    let mut judge = sevens;
    let hook = GoldHook { judge: &mut judge, prompt_text: &ids_text, unended: 0.0 };
    let hooks = Hooks { decode: Some(&ids_text), ..Hooks::default() };
    let e = train(&be, base.clone(), &long, &sft, &sft, Reward::Judge(hook), hooks, false).unwrap_err().to_string();
    assert!(e.contains("--max-new-tokens") && e.contains("context"), "{e}");
}

/// The same GRPO run on the CUDA kernels (in the simulator) and on the CPU engine: the same answers are
/// sampled (f32 on both sides; a sampled token changes only if a uniform falls within rounding, ~1e-6, of
/// a CDF boundary), so every iteration's reward, KL, loss and gradient norm agree to 1e-4 of scale (the
/// tolerance of tests/kernels_engine_sim.rs), and the trained weights too.
#[test]
fn grpo_on_the_simulated_kernels_follows_the_cpu_engine() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("cpu"), dir.path().join("sim"));
    let be = Be::new();
    let sft = Decoder::init(&be, cfg(), 1).unwrap();
    judged(&be, grpo_cfg(&a, 3), &sft, false).unwrap();
    let sim = rlhf::kernels::SimBackend::new();
    let host: Vec<Vec<f32>> = sft.to_host(&be).into_iter().map(|(_, v)| v).collect();
    let sft_sim = Decoder::from_host(&sim, cfg(), &host).unwrap();
    judged(&sim, grpo_cfg(&b, 3), &sft_sim, false).unwrap();
    let (x, y) = (metrics(&a), metrics(&b));
    assert_eq!(x.len(), 3);
    for (p, q) in x.iter().zip(&y) {
        assert_eq!(p["answer_len"], q["answer_len"], "the two engines sampled different answers");
        for k in ["score", "kl", "loss", "grad_norm", "entropy"] {
            let (p, q) = (p[k].as_f64().unwrap(), q[k].as_f64().unwrap());
            assert!((p - q).abs() <= 1e-4 * p.abs().max(1.0), "{k}: cpu {p} vs kernels {q}");
        }
    }
    let w = |out: &Path| {
        rlhf::checkpoint::load(&rlhf::checkpoint::run_dir::latest(out).unwrap().unwrap()).unwrap().flat_params()
    };
    let (wa, wb) = (w(&a), w(&b));
    let scale = wa.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = wa.iter().zip(&wb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-4 * scale, "policy weights differ by {worst:e} (scale {scale})");
}
