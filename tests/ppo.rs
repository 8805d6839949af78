//! PPO: the per-token math against hand-computed values, gradient checks, and real tiny PPO iterations.

use rlhf::pipeline::ppo::math::*;
use rlhf::pipeline::surrogate::policy_loss;

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
    let results = rlhf::check::losses::ppo();
    assert_eq!(results.len(), 6);
    eprintln!("{}", rlhf::check::format_table(&results));
    for r in &results {
        assert!(r.ok && r.entries > 0, "{r:?}");
    }
}

// ---- the trainer on tiny random models ----

mod tiny {
    use rlhf::backend::Cpu;
    use rlhf::model::ScalarModel;
    use rlhf::model::{Config, Decoder, ScalarHead};
    use rlhf::pipeline::ppo::PpoConfig;
    use rlhf::util::rng::Rng;
    use std::path::Path;

    pub type Be = Cpu<f32>;
    pub const STOP: u32 = 1;
    pub const PAD: u32 = 0;

    pub fn cfg() -> Config {
        Config::gpt2(1, 2, 16, 16, 32)
    }

    pub fn models(be: &Be) -> (Decoder<Be>, ScalarModel<Be>) {
        let sft = Decoder::init(be, cfg(), 1).unwrap();
        let rm =
            ScalarModel { trunk: Decoder::init(be, cfg(), 2).unwrap(), head: ScalarHead::init(be, 16, 3).unwrap() };
        (sft, rm)
    }

    pub fn prompts(n: usize) -> Vec<Vec<u32>> {
        let mut rng = Rng::new(9);
        (0..n).map(|_| (0..3 + rng.below(4)).map(|_| 2 + rng.below(14) as u32).collect()).collect()
    }

    pub fn ppo_cfg(out: &Path, iterations: u64) -> PpoConfig {
        let mut c = PpoConfig::new(out.to_owned(), STOP, PAD);
        c.iterations = iterations;
        c.batch = 8;
        c.minibatch = 4;
        c.ppo_epochs = 2;
        c.max_new_tokens = 6;
        c.save_every = 2;
        c.lr = 1e-3;
        c.value_lr = 1e-3;
        c.init_kl_coef = 0.05;
        c
    }

    /// The metrics log without its wall-clock fields.
    pub fn metrics(out: &Path) -> Vec<serde_json::Value> {
        let mut recs = rlhf::pipeline::metrics::read(&out.join("metrics.jsonl")).unwrap();
        for r in &mut recs {
            let o = r.as_object_mut().unwrap();
            o.remove("rollout_s");
            o.remove("iteration_s");
        }
        recs
    }
}

use rlhf::pipeline::ppo::trainer::{score_rollout, Models};
use rlhf::pipeline::ppo::Hooks;
use rlhf::pipeline::rollout::episode_batch;
use rlhf::pipeline::rollout::Episode;
use rlhf::pipeline::rollout::GoldHook;
use tiny::*;

fn ep(prompt: &[u32], answer: &[u32], ended: bool) -> Episode {
    Episode { prompt: prompt.to_vec(), answer: answer.to_vec(), logprobs: vec![-2.0; answer.len()], ended }
}

#[test]
fn layout_reads_the_reward_at_the_answer_end_and_nothing_after_it() {
    let be = Be::new();
    let a = ep(&[2, 3, 4], &[5, 6, STOP], true);
    let b = ep(&[7], &[8, STOP], true);
    let sb = episode_batch(&[&a, &b], PAD).unwrap();
    assert_eq!((sb.b, sb.t), (2, 6));
    assert_eq!(sb.tokens, vec![2, 3, 4, 5, 6, STOP, 7, 8, STOP, PAD, PAD, PAD]);
    // targets: next token, then padding from each sequence's last token on
    assert_eq!(sb.targets, vec![3, 4, 5, 6, STOP, PAD, 8, STOP, PAD, PAD, PAD, PAD]);
    assert_eq!((sb.last_row(0), sb.last_row(1)), (5, 8));
    assert_eq!((0..3).map(|j| sb.answer_row(0, j)).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!((0..2).map(|j| sb.answer_row(1, j)).collect::<Vec<_>>(), vec![6, 7]);
    let w = sb.scatter(&[vec![1.0, 2.0, 3.0], vec![4.0, 5.0]]);
    assert_eq!(w, vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(sb.gather(&w), vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0]]);

    // The padded batch scores each answer as it scores it alone (the reward is read at its <|end|>).
    let (sft, rm) = models(&be);
    let mut acts = rlhf::model::Acts::new(&be, &cfg(), 2, 6).unwrap();
    let both = rm.scores(&be, &mut acts, &sb).unwrap();
    for (i, e) in [&a, &b].iter().enumerate() {
        let one = episode_batch(&[e], PAD).unwrap();
        let mut acts1 = rlhf::model::Acts::new(&be, &cfg(), 1, one.t).unwrap();
        let alone = rm.scores(&be, &mut acts1, &one).unwrap()[0];
        assert!((both[i] - alone).abs() < 1e-5, "episode {i}: padded {} vs alone {alone}", both[i]);
        // ... and that is the head's output at the row of the last token, not at the padding after it.
        let all = rm.all_rows(&be, &mut acts1, &one).unwrap();
        assert_eq!(alone, all[one.t - 1]);
    }
    assert!(
        (both[1] - rm.all_rows(&be, &mut acts, &sb).unwrap()[11]).abs() > 1e-6,
        "the score must not be the padding's"
    );

    // Scoring: the answer without <|end|> gets the penalty; rewards cover the answer tokens only.
    let c = ppo_cfg(Path::new("/nonexistent"), 1);
    let m = Models {
        policy: rlhf::model::scalar::clone_model(&be, &sft).unwrap(),
        reference: sft,
        reward: rm,
        value: models(&be).1,
    };
    let cut = ep(&[7], &[8, 9, 10], false);
    let ro = score_rollout(&be, &m, &c, 0.1, vec![a.clone(), cut]).unwrap();
    // The penalty is subtracted from the reward model's score, never substituted for it.
    assert!((ro.scores[1] - (ro.rm_scores[1] - c.no_eos_penalty)).abs() < 1e-12);
    assert!((ro.scores[0] - ro.rm_scores[0]).abs() < 1e-12);
    assert_eq!(ro.rewards.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3]);
    assert_eq!(ro.advantages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3]);
    for i in 0..2 {
        let kl_last = -2.0 - ro.ref_logprobs[i][2];
        assert!((ro.rewards[i][2] - (-0.1 * kl_last + ro.scores[i])).abs() < 1e-9);
        assert!((ro.rewards[i][0] + 0.1 * (-2.0 - ro.ref_logprobs[i][0])).abs() < 1e-9);
    }
}

use std::path::Path;

#[test]
fn rollouts_stop_at_eos_and_a_real_iteration_has_ratio_one() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let c = ppo_cfg(&out, 1);
    let mut rng = rlhf::util::rng::Rng::new(5);
    let eps =
        rlhf::pipeline::rollout::sample_episodes(&be, &sft, &prompts(8), &c.sample_config(), 16, &mut rng).unwrap();
    assert!(eps.iter().any(|e| e.ended) && eps.iter().any(|e| !e.ended), "want both kinds in this seed's rollout");
    for e in &eps {
        let stops = e.answer.iter().filter(|&&t| t == STOP).count();
        assert_eq!(stops, e.ended as usize, "{e:?}");
        if e.ended {
            assert_eq!(*e.answer.last().unwrap(), STOP);
        } else {
            assert_eq!(e.answer.len(), c.max_new_tokens);
        }
    }
    let s = rlhf::pipeline::ppo::train(&be, c, &prompts(8), &sft, &rm, Hooks::default(), false).unwrap();
    assert_eq!(s.iterations, 1);
    let m = metrics(&out);
    let dev = m[0]["first_ratio_dev"].as_f64().unwrap();
    assert!(dev < 1e-4, "first-minibatch |ratio - 1| = {dev}");
    for k in [
        "score",
        "kl",
        "entropy",
        "clip_frac",
        "approx_kl",
        "value_loss",
        "explained_variance",
        "answer_len",
        "eos_frac",
        "beta",
    ] {
        assert!(m[0].get(k).is_some(), "metric {k} missing");
    }
    assert!(out.join("ppo_scores.svg").is_file());
}

#[test]
fn the_ratio_check_stops_loudly() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let mut c = ppo_cfg(&dir.path().join("run"), 1);
    c.ratio_tol = 1e-13; // below f32 rounding: sampler and training forward cannot agree this closely
    let e = rlhf::pipeline::ppo::train(&be, c, &prompts(8), &sft, &rm, Hooks::default(), false).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("ratio check failed") && msg.contains("iteration 1"), "{msg}");
}

#[test]
fn same_seed_same_run_and_resume_equals_unbroken() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let (a, b, k) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("k"));
    rlhf::pipeline::ppo::train(&be, ppo_cfg(&a, 4), &prompts(12), &sft, &rm, Hooks::default(), false).unwrap();
    rlhf::pipeline::ppo::train(&be, ppo_cfg(&b, 4), &prompts(12), &sft, &rm, Hooks::default(), false).unwrap();
    assert_eq!(metrics(&a), metrics(&b), "two runs with one seed differ");
    assert_eq!(metrics(&a).len(), 4);
    // "Killed" after iteration 3 with the last checkpoint at 2: metrics has a line past the checkpoint.
    rlhf::pipeline::ppo::train(&be, ppo_cfg(&k, 3), &prompts(12), &sft, &rm, Hooks::default(), false).unwrap();
    std::fs::remove_dir_all(k.join("step-000003")).unwrap();
    std::fs::write(k.join("latest"), "step-000002").unwrap();
    assert_eq!(metrics(&k).len(), 3);
    let e =
        rlhf::pipeline::ppo::train(&be, ppo_cfg(&k, 4), &prompts(12), &sft, &rm, Hooks::default(), false).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
    rlhf::pipeline::ppo::train(&be, ppo_cfg(&k, 4), &prompts(12), &sft, &rm, Hooks::default(), true).unwrap();
    assert_eq!(metrics(&a), metrics(&k), "resumed run differs from the unbroken one");
    let read = |d: &Path| std::fs::read(d.join("step-000004/model.safetensors")).unwrap();
    assert!(read(&a) == read(&k), "final policies differ");
    let readv = |d: &Path| std::fs::read(d.join("step-000004/value/model.safetensors")).unwrap();
    assert!(readv(&a) == readv(&k), "final value models differ");
}

#[test]
fn bad_inputs_give_clear_errors() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, prompts: &[Vec<u32>], rm: &rlhf::model::ScalarModel<Be>, hooks: Hooks| {
        let e = rlhf::pipeline::ppo::train(&be, ppo_cfg(&dir.path().join(name), 2), prompts, &sft, rm, hooks, false)
            .unwrap_err();
        format!("{e:#}")
    };
    assert!(run("empty", &[], &rm, Hooks::default()).contains("no prompts"));
    let other = rlhf::model::Config { vocab_size: 20, ..cfg() };
    let rm20 = rlhf::model::ScalarModel {
        trunk: rlhf::model::Decoder::init(&be, other, 2).unwrap(),
        head: rlhf::model::ScalarHead::init(&be, 16, 3).unwrap(),
    };
    let msg = run("vocab", &prompts(8), &rm20, Hooks::default());
    assert!(msg.contains("vocabulary (20)") && msg.contains("(16)"), "{msg}");
    let decode = |t: &[u32]| format!("{t:?}");
    let mut failing =
        |_: &[(String, String)]| -> anyhow::Result<Vec<f64>> { anyhow::bail!("judge command exited with status 3") };
    let gold = GoldHook { judge: &mut failing, prompt_text: &decode, unended: -10.0 };
    let msg = run("judge", &prompts(8), &rm, Hooks { decode: Some(&decode), gold: Some(gold), ..Default::default() });
    assert!(msg.contains("gold judge failed") && msg.contains("status 3") && msg.contains("iteration 1"), "{msg}");
    let mut garbage = |p: &[(String, String)]| -> anyhow::Result<Vec<f64>> { Ok(vec![1.0; p.len() - 1]) };
    let msg = run(
        "garbage",
        &prompts(8),
        &rm,
        Hooks {
            decode: Some(&decode),
            gold: Some(GoldHook { judge: &mut garbage, prompt_text: &decode, unended: -10.0 }),
            ..Default::default()
        },
    );
    assert!(msg.contains("gold judge returned 7 scores") && msg.contains("for 8 answers"), "{msg}");
    // A reward model that yields NaN: stop, naming the iteration; no checkpoint is written over.
    let mut bad = rlhf::model::scalar::clone_trunk_head(&be, &rm).unwrap();
    bad.head.b = vec![f32::NAN];
    let msg = run("nan", &prompts(8), &bad, Hooks::default());
    assert!(
        msg.contains("iteration 1") && msg.contains("NaN") && msg.contains("no checkpoint had been written"),
        "{msg}"
    );
}

#[test]
fn ppo_raises_the_reward_model_score() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut c = ppo_cfg(&out, 16);
    c.batch = 16;
    c.minibatch = 8;
    c.ppo_epochs = 4;
    c.save_every = 100;
    rlhf::pipeline::ppo::train(&be, c, &prompts(32), &sft, &rm, Hooks::default(), false).unwrap();
    let m = metrics(&out);
    // The optimised score: the reward model's at <|end|>, or the no-EOS penalty.
    let avg = |r: &[serde_json::Value], k: &str| r.iter().map(|x| x[k].as_f64().unwrap()).sum::<f64>() / r.len() as f64;
    let (first, last) = (avg(&m[..4], "score"), avg(&m[12..], "score"));
    eprintln!(
        "score: first 4 iterations {first:.4}, last 4 {last:.4}; eos frac {:.3} -> {:.3}; kl last {}",
        avg(&m[..4], "eos_frac"),
        avg(&m[12..], "eos_frac"),
        m[15]["kl"]
    );
    assert!(last > first + 0.1, "score did not rise: {first} -> {last}");
}

// ---- labelling ----

use rlhf::data::jsonl::Ranked;
use rlhf::pipeline::label::{self, parse_ranking, Answer};

#[test]
fn typed_rankings_are_validated() {
    assert_eq!(parse_ranking("1 0 2 2", 4), Ok(vec![1, 0, 2, 2]));
    assert_eq!(parse_ranking("1,0,3,2", 4), Ok(vec![1, 0, 3, 2]));
    assert_eq!(parse_ranking("bacd", 4), Ok(vec![1, 0, 2, 3]));
    assert_eq!(parse_ranking("D C B A", 4), Ok(vec![3, 2, 1, 0]));
    for bad in ["", "1 0 2", "0 1 2 4", "1 1 2 3", "ABC", "ABCE", "AABC", "x y z w"] {
        assert!(parse_ranking(bad, 4).is_err(), "{bad:?} accepted");
    }
    let all = [true; 4];
    assert_eq!(label::ranks_from_scores(&[0.5, 2.0, 0.5, -1.0], &all).unwrap(), vec![1, 0, 1, 3]);
    assert!(label::ranks_from_scores(&[f64::NAN, 1.0], &[true, true]).is_err());
    // An answer cut at the length limit ranks below every answer that ended, whatever its score.
    assert_eq!(label::ranks_from_scores(&[5.0, 1.0, 9.0, 0.0], &[true, true, false, false]).unwrap(), vec![0, 1, 2, 3]);
}

/// Three answers per prompt, the second one cut at the length limit.
fn three(p: &str) -> Vec<Answer> {
    (0..3).map(|i| Answer { text: format!("{p}-answer-{i}"), ended: i != 1 }).collect()
}

#[test]
fn interactive_labelling_with_scripted_input_resumes_and_never_loses_labels() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.jsonl");
    let prompts: Vec<String> = ["p1", "p2", "p3", "p4"].iter().map(|s| s.to_string()).collect();
    let mut calls = 0;
    let mut gen = |ps: &[&str]| -> anyhow::Result<Vec<Vec<Answer>>> {
        calls += 1;
        Ok(ps.iter().map(|p| three(p)).collect())
    };
    // p1: bad input twice, then ranks; p2: skipped; p3: an order; then quit before p4.
    let mut input = std::io::Cursor::new("1 2\nhello\n1 0 2\ns\nCAB\nq\n");
    let mut ui = Vec::new();
    let st = label::label(&prompts, 3, 2, &out, &mut gen, None, &mut input, &mut ui).unwrap();
    assert_eq!((st.labelled, st.skipped_by_user, st.quit), (2, 1, true));
    let ui = String::from_utf8(ui).unwrap();
    assert_eq!(ui.matches("not a ranking").count(), 2, "{ui}");
    assert!(
        ui.contains("p1-answer-2") && ui.contains("--- C ---") && ui.contains("--- B (cut off: it did not end) ---")
    );
    let recs = label::read_records(&out).unwrap();
    assert_eq!(
        recs[0],
        Ranked {
            prompt: "p1".into(),
            completions: vec!["p1-answer-0".into(), "p1-answer-1".into(), "p1-answer-2".into()],
            ranking: vec![1, 0, 2],
            ended: vec![true, false, true],
        }
    );
    assert_eq!((recs[1].prompt.as_str(), recs[1].ranking.clone()), ("p3", vec![1, 2, 0]));
    // A torn last line (killed mid-write) is dropped; the complete labels stay.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, b"{\"prompt\": \"p4\", \"compl").unwrap();
    // Next session: p1, p3 are done; p2 and p4 are asked; end of input stops cleanly.
    let mut input = std::io::Cursor::new("0 1 2\n");
    let st = label::label(&prompts, 3, 2, &out, &mut gen, None, &mut input, &mut Vec::new()).unwrap();
    assert_eq!((st.skipped_done, st.labelled, st.quit), (2, 1, true));
    let recs = label::read_records(&out).unwrap();
    assert_eq!(recs.iter().map(|r| r.prompt.as_str()).collect::<Vec<_>>(), vec!["p1", "p3", "p2"]);
    // A corrupt line in the middle is an error naming the line, not a silent loss.
    std::fs::write(&out, "{\"prompt\":\"a\",\"completions\":[\"x\",\"y\"],\"ranking\":[0,1]}\nnot json\n{\"prompt\":\"b\",\"completions\":[\"x\",\"y\"],\"ranking\":[0,1]}\n").unwrap();
    let e = label::read_records(&out).unwrap_err();
    assert!(format!("{e:#}").contains("labels.jsonl:2"), "{e:#}");
    assert!(calls >= 3);
}

#[test]
fn judge_labelling_runs_unattended_and_reports_a_failing_judge() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("labels.jsonl");
    let prompts: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
    let batches = std::cell::RefCell::new(vec![]);
    let mut gen = |ps: &[&str]| -> anyhow::Result<Vec<Vec<Answer>>> {
        batches.borrow_mut().push(ps.len());
        Ok(ps
            .iter()
            .map(|p| {
                // An empty answer (ended at once) is a legal answer.
                [format!("{p}!"), format!("{p}!!!"), String::new()]
                    .into_iter()
                    .map(|text| Answer { text, ended: true })
                    .collect()
            })
            .collect())
    };
    let mut calls = 0;
    let mut judge = |items: &[(String, String)]| -> anyhow::Result<Vec<f64>> {
        calls += 1;
        Ok(items.iter().map(|(_, a)| a.len() as f64).collect())
    };
    let st =
        label::label(&prompts, 3, 2, &out, &mut gen, Some(&mut judge), &mut std::io::empty(), &mut std::io::sink())
            .unwrap();
    assert_eq!((st.labelled, calls), (3, 2), "one judge call per batch of 2 prompts");
    let recs = label::read_records(&out).unwrap();
    assert_eq!(recs[0].ranking, vec![1, 0, 2]);
    assert_eq!(recs[0].completions[2], "");
    assert_eq!(*batches.borrow(), vec![2, 1]);
    // What label writes, reward reads: the empty answer is one of the ranked completions.
    let read = rlhf::data::jsonl::read_ranked(&out, false).unwrap();
    assert_eq!(read.records, recs);
    let out2 = dir.path().join("l2.jsonl");
    let mut garbage = |_: &[(String, String)]| -> anyhow::Result<Vec<f64>> { Ok(vec![1.0]) };
    let e =
        label::label(&prompts, 3, 2, &out2, &mut gen, Some(&mut garbage), &mut std::io::empty(), &mut std::io::sink())
            .unwrap_err();
    assert!(format!("{e:#}").contains("returned 1 scores for 6 answers"), "{e:#}");
    let mut failing = |_: &[(String, String)]| -> anyhow::Result<Vec<f64>> { anyhow::bail!("judge crashed") };
    let e =
        label::label(&prompts, 3, 2, &out2, &mut gen, Some(&mut failing), &mut std::io::empty(), &mut std::io::sink())
            .unwrap_err();
    assert!(format!("{e:#}").contains("judge failed") && format!("{e:#}").contains("judge crashed"), "{e:#}");
}

// ---- evaluation ----

/// A judge for tests: the number of words of the answer.
struct WordCount;
impl rlhf::judge::Judge for WordCount {
    fn name(&self) -> String {
        "word count".into()
    }
    fn score(&mut self, items: &[(String, String)]) -> anyhow::Result<Vec<f64>> {
        Ok(items.iter().map(|(_, a)| rlhf::judge::words(a).len() as f64).collect())
    }
}

#[test]
fn eval_reports_systems_baselines_and_strategies_on_tiny_models() {
    use rlhf::data::chat::ChatFormat;
    use rlhf::model::{Decoder, ScalarHead, ScalarModel};
    use rlhf::pipeline::eval::{self, EvalConfig, HeldOut, Models};
    use rlhf::tokenizer::{Tokenizer, SPECIAL_TOKENS};
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "She was glad to see him. He walked to the house. It rained all day and night.\n".repeat(20))
        .unwrap();
    let tok = Tokenizer::train(&[text], 300, &SPECIAL_TOKENS).unwrap();
    let ct = ChatFormat::from_tokenizer(&tok).unwrap();
    let be = Be::new();
    let cfg = rlhf::model::Config { vocab_size: tok.vocab_size(), n_positions: 48, ..tiny::cfg() };
    let sft = Decoder::init(&be, cfg, 1).unwrap();
    let rm = ScalarModel { trunk: Decoder::init(&be, cfg, 2).unwrap(), head: ScalarHead::init(&be, 16, 3).unwrap() };
    let heldout: Vec<HeldOut> = (0..5)
        .map(|i| HeldOut {
            prompt: format!("He walked {i} times."),
            reference: Some(" She was glad to see him.".into()),
        })
        .collect();
    let mut ec = EvalConfig {
        sample: rlhf::model::sample::SampleConfig {
            max_new_tokens: 3,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            stop: Some(ct.end),
        },
        samples: 2,
        best_of: 3,
        no_eos_penalty: 1.0,
        unended_gold: -10.0,
        seed: 3,
        side_by_side: 2,
    };
    let models = Models { policy: &sft, sft: &sft, reward: &rm, base: Some(&sft) };
    let mut judge = WordCount;
    let r = eval::evaluate(&be, &models, &tok, &ct, &heldout, &ec, Some(&mut judge)).unwrap();
    let names: Vec<&str> = r.systems.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["policy", "SFT", "best-of-3 (RM)", "best constant answer", "Austen"], "{r:#?}");
    let (pol, sft_row, austen) = (r.system("policy").unwrap(), r.system("SFT").unwrap(), r.system("Austen").unwrap());
    assert_eq!((pol.answers, sft_row.answers, austen.answers), (10, 30, 5));
    // The SFT model against itself: no KL (the same weights score the same tokens).
    assert!(pol.kl_to_sft.unwrap().abs() < 1e-9, "{pol:?}");
    // A random model with 3 new tokens rarely ends: unended answers score -10 by gold, whatever the judge says.
    let gold = pol.gold.unwrap().mean;
    let ended = pol.eos_frac;
    assert!(ended < 1.0, "{pol:?}");
    assert!(gold <= ended * 3.0 + (1.0 - ended) * -10.0 + 1e-9, "gold {gold} with {ended} of the answers ended");
    // Austen's 6 words against answers of at most 3 tokens: it wins nearly always, so others win rarely.
    assert!(pol.win_vs_austen.unwrap().mean < 0.2 && austen.win_vs_austen.is_none());
    assert!(sft_row.win_vs_sft.is_none() && pol.win_vs_sft.is_some());
    assert_eq!((r.best_of, r.strategies.len()), (3, 12), "{:?}", r.strategies);
    let empty = r.strategies.iter().find(|s| s.name == "empty answer").unwrap();
    assert_eq!((empty.gold.mean, empty.win_vs_austen.mean), (0.0, 0.0));
    let copy = r.strategies.iter().find(|s| s.name == "a copy of the prompt").unwrap();
    assert!(copy.example.starts_with(" He walked 0 times."));
    assert_eq!(r.side_by_side.len(), 2);
    assert!(pol.ppl_base.unwrap() > 1.0);
    let tables = r.tables();
    assert_eq!(tables.len(), 3);
    assert!(tables[0].to_markdown().contains("| policy | 10 |"), "{}", tables[0].to_markdown());
    // Without references: no Austen row, no strategies.
    let bare: Vec<HeldOut> = heldout.iter().map(|h| HeldOut { reference: None, ..h.clone() }).collect();
    ec.side_by_side = 0;
    let r = eval::evaluate(&be, &models, &tok, &ct, &bare, &ec, Some(&mut judge)).unwrap();
    assert!(r.system("Austen").is_none() && r.strategies.is_empty() && r.best_constant.is_none());
    let e = eval::Curve::of_run(dir.path()).unwrap_err();
    assert!(format!("{e:#}").contains("metrics.jsonl"), "{e:#}");
}

#[test]
fn intervals_are_over_prompts() {
    let (m, h) = rlhf::util::stats::mean_ci95(&[0.0, 1.0, 0.0, 1.0]);
    // sd = sqrt(1/3), n = 4: 1.96 * 0.57735 / 2.
    assert!((m - 0.5).abs() < 1e-12 && (h - 1.96 * (1.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12, "{m} {h}");
    assert!(rlhf::util::stats::mean_ci95(&[1.0]).1.is_nan());
}

// ---- command-line inputs ----

#[test]
fn prompt_files_fail_with_clear_errors() {
    let read_prompts = |p: &std::path::Path| rlhf::data::jsonl::read_prompts(p, false).map(|r| r.records);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.jsonl");
    let err = |text: &str| {
        std::fs::write(&f, text).unwrap();
        format!("{:#}", read_prompts(&f).unwrap_err())
    };
    assert!(err("").contains("holds no usable records"));
    assert!(err("{\"prompt\": \"a\"}\n{oops\n").contains("p.jsonl:2: not JSON"));
    assert!(err("{\"text\": \"a\"}\n").contains("p.jsonl:1: missing field \"prompt\""));
    assert!(err("{\"prompt\": \"  \"}\n").contains("field \"prompt\" is empty"));
    assert!(format!("{:#}", read_prompts(&dir.path().join("missing.jsonl")).unwrap_err()).contains("missing.jsonl"));
    std::fs::write(&f, "{\"prompt\": \"a\"}\n\n{\"prompt\": \"b\"}\n").unwrap();
    assert_eq!(read_prompts(&f).unwrap(), vec!["a", "b"]);

    // The judge commands' own failures are covered in tests/judge.rs.
}

#[test]
fn ppo_ptx_mixes_the_pretraining_loss_into_the_policy_gradient() {
    let be = Be::new();
    let (sft, rm) = models(&be);
    let dir = tempfile::tempdir().unwrap();
    let ptx = |i: u64| -> anyhow::Result<(Vec<u32>, Vec<u32>, usize, usize)> {
        let mut r = rlhf::util::rng::Rng::stream(5, i);
        let seq: Vec<u32> = (0..4 * 9).map(|_| 2 + r.below(14) as u32).collect();
        let (inp, tgt): (Vec<u32>, Vec<u32>) =
            seq.chunks(9).flat_map(|c| c[..8].iter().copied().zip(c[1..].iter().copied())).unzip();
        Ok((inp, tgt, 4, 8))
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut c = ppo_cfg(&a, 2);
    c.ptx_coef = 1.0;
    c.ent_coef = 0.01;
    rlhf::pipeline::ppo::train(
        &be,
        c.clone(),
        &prompts(8),
        &sft,
        &rm,
        Hooks { ptx: Some(&ptx), ..Default::default() },
        false,
    )
    .unwrap();
    rlhf::pipeline::ppo::train(&be, ppo_cfg(&b, 2), &prompts(8), &sft, &rm, Hooks::default(), false).unwrap();
    let (ma, mb) = (metrics(&a), metrics(&b));
    assert_eq!(ma[0]["score"], mb[0]["score"], "the first rollout precedes any update");
    assert_ne!(ma[1]["score"], mb[1]["score"], "the ptx gradient changed nothing");
    c.out = dir.path().join("c");
    let e = rlhf::pipeline::ppo::train(&be, c, &prompts(8), &sft, &rm, Hooks::default(), false).unwrap_err();
    assert!(format!("{e:#}").contains("--ptx-data"), "{e:#}");
    eprintln!("first-minibatch max |ratio - 1|: {} and {}", ma[0]["first_ratio_dev"], ma[1]["first_ratio_dev"]);
}

// ---- the commands end to end (tokenizer, checkpoints on disk, judge command) ----

#[test]
fn ppo_eval_and_label_commands_end_to_end() {
    use clap::Parser;
    use rlhf::checkpoint::{self, Checkpoint, ModelKind};
    use rlhf::cli::eval::{run as run_eval, EvalArgs};
    use rlhf::cli::label::{run as run_label, LabelArgs};
    use rlhf::cli::ppo::{run as run_ppo, PpoArgs};
    #[derive(Parser)]
    struct P {
        #[command(flatten)]
        a: PpoArgs,
    }
    #[derive(Parser)]
    struct E {
        #[command(flatten)]
        a: EvalArgs,
    }
    #[derive(Parser)]
    struct L {
        #[command(flatten)]
        a: LabelArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    std::fs::write(d("corpus.txt"), "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.\n".repeat(20)).unwrap();
    let tok =
        rlhf::tokenizer::Tokenizer::train(&[dir.path().join("corpus.txt")], 300, &rlhf::tokenizer::SPECIAL_TOKENS)
            .unwrap();
    tok.save(d("tok.json")).unwrap();
    let be = Be::new();
    let mcfg = rlhf::model::Config::gpt2(1, 2, 16, tok.vocab_size(), 64);
    let sft = rlhf::model::Decoder::init(&be, mcfg, 1).unwrap();
    checkpoint::save(&dir.path().join("sft"), &Checkpoint::from_model(&be, &sft, ModelKind::Policy), None).unwrap();
    let rm = rlhf::model::ScalarModel {
        trunk: rlhf::model::Decoder::init(&be, mcfg, 2).unwrap(),
        head: rlhf::model::ScalarHead::init(&be, 16, 3).unwrap(),
    };
    checkpoint::save(&dir.path().join("rm"), &rm.to_checkpoint(&be).unwrap(), None).unwrap();
    let other = rlhf::model::Config { vocab_size: mcfg.vocab_size + 10, ..mcfg };
    let rm_other = rlhf::model::ScalarModel {
        trunk: rlhf::model::Decoder::init(&be, other, 2).unwrap(),
        head: rlhf::model::ScalarHead::init(&be, 16, 3).unwrap(),
    };
    checkpoint::save(&dir.path().join("rm_other"), &rm_other.to_checkpoint(&be).unwrap(), None).unwrap();
    std::fs::write(
        d("prompts.jsonl"),
        ["a truth", "a single man", "good fortune", "a wife", "universally", "in want"]
            .iter()
            .map(|p| format!("{{\"prompt\": \"{p}\"}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let judge = "while read -r l; do echo ${#l}; done";
    let ppo = |reward: &str, out: &str| {
        let a = P::parse_from([
            "ppo",
            "--policy",
            &d("sft"),
            "--reward",
            &d(reward),
            "--prompts",
            &d("prompts.jsonl"),
            "--tokenizer",
            &d("tok.json"),
            "--out",
            &d(out),
            "--iterations",
            "2",
            "--batch",
            "4",
            "--minibatch",
            "2",
            "--ppo-epochs",
            "1",
            "--max-new-tokens",
            "5",
            "--judge",
            judge,
            "--gold-every",
            "1",
            "--no-eos-penalty",
            "1.5",
            "--device",
            "cpu",
        ])
        .a;
        run_ppo(a)
    };
    ppo("rm", "run").unwrap();
    let m = metrics(&dir.path().join("run"));
    assert_eq!(m.len(), 2);
    assert!(m.iter().all(|r| r["gold_score"].as_f64().is_some()), "{m:?}");
    let e = ppo("rm_other", "run2").unwrap_err();
    assert!(format!("{e:#}").contains("vocabulary"), "{e:#}");
    let a = E::parse_from([
        "eval",
        "--policy",
        &d("run"),
        "--sft",
        &d("sft"),
        "--reward",
        &d("rm"),
        "--prompts",
        &d("prompts.jsonl"),
        "--tokenizer",
        &d("tok.json"),
        "--judge",
        judge,
        "--ppo-run",
        &d("run"),
        "--out",
        &d("eval"),
        "--max-new-tokens",
        "5",
        "--device",
        "cpu",
    ])
    .a;
    run_eval(a).unwrap();
    assert!(dir.path().join("eval/overoptimisation.svg").is_file());
    // each step leaves its summary; the report gathers them, PPO before the evaluation, plots inline
    let (html, md) = rlhf::pipeline::report::write(dir.path()).unwrap();
    let html = std::fs::read_to_string(html).unwrap();
    let (ppo_at, eval_at) = (html.find("<h2>ppo (run)</h2>").unwrap(), html.find("<h2>eval (eval)</h2>").unwrap());
    assert!(ppo_at < eval_at, "pipeline order");
    assert_eq!(html.matches("<svg").count(), 4, "three PPO plots and the over-optimisation curve");
    assert!(html.contains("policy: gold win rate vs SFT"), "the evaluation's headline numbers");
    assert!(std::fs::read_to_string(md).unwrap().contains("![eval/overoptimisation.svg](eval/overoptimisation.svg)"));
    let a = L::parse_from([
        "label",
        "--policy",
        &d("run"),
        "--prompts",
        &d("prompts.jsonl"),
        "--tokenizer",
        &d("tok.json"),
        "-k",
        "3",
        "--out",
        &d("labels.jsonl"),
        "--judge",
        judge,
        "--max-new-tokens",
        "5",
        "--device",
        "cpu",
    ])
    .a;
    run_label(a).unwrap();
    let recs = label::read_records(&dir.path().join("labels.jsonl")).unwrap();
    assert_eq!(recs.len(), 6);
    assert!(recs.iter().all(|r| r.completions.len() == 3 && r.ranking.len() == 3 && r.ranking.contains(&0)));

    // the iterated loop: round 1 PPO against rm, round 2 labels, retrains and continues; a rerun with one
    // more round does only round 3
    use rlhf::cli::iterate::{run as run_iterate, IterateArgs};
    #[derive(Parser)]
    struct I {
        #[command(flatten)]
        a: IterateArgs,
    }
    std::fs::write(d("demos.jsonl"), "{\"prompt\": \"a truth\", \"completion\": \" a wife\"}\n".repeat(4)).unwrap();
    let iterate = |rounds: &str| {
        let mut args: Vec<String> =
            ["iterate", "--rounds", rounds, "--iterations", "1", "-k", "3"].map(String::from).into();
        for (flag, file) in [
            ("--sft", "sft"),
            ("--reward", "rm"),
            ("--labels", "labels.jsonl"),
            ("--rm-prompts", "prompts.jsonl"),
            ("--ppo-prompts", "prompts.jsonl"),
            ("--sft-data", "demos.jsonl"),
            ("--tokenizer", "tok.json"),
            ("--out", "iter"),
        ] {
            args.extend([flag.to_string(), d(file)]);
        }
        args.extend(["--max-new-tokens", "5", "--judge", judge, "--device", "cpu"].map(String::from));
        args.push("--reward-args=--skip-bad --prompts-per-step 2 --eval-fraction 0.3".into());
        args.push("--ppo-args=--batch 4 --minibatch 2 --ppo-epochs 1 --gold-every 1".into());
        run_iterate(I::parse_from(args).a)
    };
    iterate("2").unwrap();
    let round2 = std::fs::read_to_string(dir.path().join("iter/round-2/labels-all.jsonl")).unwrap();
    assert_eq!(round2.lines().count(), 12, "the initial labels and round 2's");
    let summary = std::fs::read_to_string(dir.path().join("iter/summary.json")).unwrap();
    assert!(summary.contains("iter/round-2/reward"), "{summary}");
    let ppo1 = std::fs::metadata(dir.path().join("iter/round-1/ppo/summary.json")).unwrap().modified().unwrap();
    iterate("3").unwrap();
    let again = std::fs::metadata(dir.path().join("iter/round-1/ppo/summary.json")).unwrap().modified().unwrap();
    assert_eq!(ppo1, again, "a finished round is not run again");
    assert!(dir.path().join("iter/round-3/ppo/summary.json").is_file());
    let all3 = std::fs::read_to_string(dir.path().join("iter/round-3/labels-all.jsonl")).unwrap();
    assert_eq!(all3.lines().count(), 18);
}

/// Timing of the default settings on the tiny preset (random weights, a 4096-token vocabulary); run with
/// `cargo test --release --test ppo -- --ignored --nocapture`.
#[test]
#[ignore]
fn tiny_preset_iteration_time() {
    let be = Be::new();
    let mcfg = rlhf::model::Config::preset("tiny", 4096).unwrap();
    let sft = rlhf::model::Decoder::init(&be, mcfg, 1).unwrap();
    let rm = rlhf::model::ScalarModel {
        trunk: rlhf::model::Decoder::init(&be, mcfg, 2).unwrap(),
        head: rlhf::model::ScalarHead::init(&be, mcfg.n_embd, 3).unwrap(),
    };
    let mut rng = rlhf::util::rng::Rng::new(9);
    let prompts: Vec<Vec<u32>> =
        (0..64).map(|_| (0..8 + rng.below(16)).map(|_| 5 + rng.below(4000) as u32).collect()).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut c = rlhf::pipeline::ppo::PpoConfig::new(dir.path().join("run"), 4, 1);
    c.iterations = 3;
    let t = std::time::Instant::now();
    rlhf::pipeline::ppo::train(&be, c, &prompts, &sft, &rm, Hooks::default(), false).unwrap();
    let m = metrics(&dir.path().join("run"));
    eprintln!("tiny preset, defaults: {:.2} s/iteration; {m:?}", t.elapsed().as_secs_f64() / 3.0);
}

#[test]
fn a_reward_model_of_another_shape_works() {
    let be = Be::new();
    let (sft, _) = models(&be);
    let big = rlhf::model::Config { n_layer: 2, n_head: 3, n_embd: 24, ..cfg() };
    let rm = rlhf::model::ScalarModel {
        trunk: rlhf::model::Decoder::init(&be, big, 2).unwrap(),
        head: rlhf::model::ScalarHead::init(&be, 24, 3).unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let s = rlhf::pipeline::ppo::train(
        &be,
        ppo_cfg(&dir.path().join("run"), 2),
        &prompts(8),
        &sft,
        &rm,
        Hooks::default(),
        false,
    )
    .unwrap();
    assert_eq!(s.iterations, 2);
    let ck = rlhf::checkpoint::load(&dir.path().join("run/step-000002/value")).unwrap();
    assert_eq!(ck.config, big, "the value model is the reward model's shape");
}
