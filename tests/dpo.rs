//! `rlhf dpo` end to end on a tiny model: it learns the preferences, each loss variant runs, a paused and
//! resumed run is bit-identical to an unbroken one, and a resume refuses what would break that.

mod common;

use common::{preference_fixture, PreferenceFixture};
use rlhf::backend::Cpu;
use rlhf::pipeline::dpo::{dpo, DpoConfig, DpoSummary, LossName};

impl PreferenceFixture {
    fn dpo_config(&self, out: &str) -> DpoConfig {
        DpoConfig {
            base: self.base.clone(),
            reference: None,
            data: self.data.clone(),
            tokenizer: rlhf::checkpoint::tokenizer::TokenizerArgs::path(self.tokenizer.clone()),
            out: self.dir.path().join(out),
            loss: LossName::Sigmoid,
            beta: 0.5,
            label_smoothing: 0.0,
            prompts_per_step: 3,
            epochs: 2.0,
            lr: 3e-3,
            eval_fraction: 0.2,
            eval_every: 2,
            save_every: 2,
            stop_after: None,
            skip_bad: false,
            seed: 7,
        }
    }
}

fn run(cfg: &DpoConfig, resume: bool) -> anyhow::Result<DpoSummary> {
    dpo(&Cpu::<f32>::new(), cfg, resume)
}

fn metrics(cfg: &DpoConfig) -> Vec<serde_json::Value> {
    rlhf::pipeline::metrics::read(&cfg.out.join("metrics.jsonl")).unwrap()
}

#[test]
fn dpo_moves_the_policy_towards_the_chosen_answers() {
    let f = preference_fixture();
    let cfg = f.dpo_config("dpo");
    let s = run(&cfg, false).unwrap();
    // 8 training prompts, 3 per step, 2 epochs: 6 steps; 2 held-out prompts (one pair, one K = 3 record).
    assert!(s.complete && s.steps == 6 && s.train_prompts == 8 && s.eval_prompts == 2, "{s:?}");
    let recs = metrics(&cfg);
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    // Step 1 starts at the reference: every log-ratio is 0 (up to the f32 rounding of two batch layouts)
    // and the loss is log 2.
    assert!((loss(&recs[0]) - std::f64::consts::LN_2).abs() < 1e-4, "{}", recs[0]);
    assert!(recs[0]["chosen_logratio"].as_f64().unwrap().abs() < 1e-3, "{}", recs[0]);
    // It learns: the last steps' loss is below log 2 and the chosen answers gain on the rejected ones.
    let last = recs.last().unwrap();
    assert!(loss(last) < 0.6, "{last}");
    assert!(last["margin"].as_f64().unwrap() > 0.05, "{last}");
    assert!(last["accuracy"].as_f64().unwrap() >= 0.75, "{last}");
    // Held-out measurements every 2 steps, and in the summary.
    assert_eq!(recs.iter().filter(|r| r.get("eval_accuracy").is_some()).count(), 3);
    assert!(s.eval.loss.is_finite() && s.eval.pairs == s.eval_pairs && s.eval_pairs >= 2, "{s:?}");
    assert!(cfg.out.join("loss.svg").is_file() && cfg.out.join("reference-logprobs.bin").is_file());
    // The checkpoint is a policy the other commands read.
    let be = Cpu::<f32>::new();
    rlhf::checkpoint::persist::load_policy(&be, &cfg.out).unwrap();

    // Conservative DPO and IPO run too; IPO's loss at the reference is (1/(2 tau))^2.
    for (loss_name, eps, first) in [(LossName::Sigmoid, 0.1, std::f64::consts::LN_2), (LossName::Ipo, 0.0, 1.0)] {
        let name = format!("{loss_name:?}-{eps}");
        let c = DpoConfig { loss: loss_name, label_smoothing: eps, epochs: 1.0, ..f.dpo_config(&name) };
        let s = run(&c, false).unwrap();
        let recs = metrics(&c);
        assert!(s.complete && (loss(&recs[0]) - first).abs() < 1e-3, "{name}: {}", recs[0]);
        assert!(loss(recs.last().unwrap()) < first, "{name}: {:?}", recs.last());
    }
}

#[test]
fn dpo_paused_and_resumed_is_bit_identical_and_needs_no_base() {
    let f = preference_fixture();
    let whole = run(&f.dpo_config("whole"), false).unwrap();
    // The base model is only read by a fresh start: a resume works without it.
    let copy = f.dir.path().join("base-copy");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&f.base).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
    }
    let mut cfg = DpoConfig { base: copy.clone(), stop_after: Some(3), ..f.dpo_config("split") };
    let paused = run(&cfg, false).unwrap();
    assert!(!paused.complete && paused.steps == 3 && paused.checkpoint.ends_with("step-000003"), "{paused:?}");
    std::fs::remove_dir_all(&copy).unwrap();
    cfg.stop_after = None;
    let resumed = run(&cfg, true).unwrap();
    assert!(resumed.complete && resumed.steps == 6);
    assert_eq!(resumed.final_train_loss.to_bits(), whole.final_train_loss.to_bits());
    assert_eq!(resumed.eval.accuracy.to_bits(), whole.eval.accuracy.to_bits());
    let state = |out: &std::path::Path| {
        let dir = rlhf::checkpoint::run_dir::latest(out).unwrap().unwrap();
        (rlhf::checkpoint::load(&dir).unwrap(), rlhf::checkpoint::load_train_state(&dir).unwrap())
    };
    let ((ck_a, st_a), (ck_b, st_b)) = (state(&f.dir.path().join("whole")), state(&cfg.out));
    assert_eq!(ck_a.tensors, ck_b.tensors, "policy parameters differ");
    assert_eq!((st_a.step, &st_a.m, &st_a.v), (st_b.step, &st_b.m, &st_b.v), "optimizer moments differ");
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    assert_eq!(read(f.dir.path().join("whole/metrics.jsonl")), read(cfg.out.join("metrics.jsonl")));
    // A finished run has nothing to resume.
    let e = format!("{:#}", run(&cfg, true).unwrap_err());
    assert!(e.contains("complete"), "{e}");
}

#[test]
fn dpo_resume_refuses_changed_settings_data_and_reference_cache() {
    let f = preference_fixture();
    let cfg = DpoConfig { stop_after: Some(2), ..f.dpo_config("run") };
    run(&cfg, false).unwrap();
    let e = format!("{:#}", run(&cfg, false).unwrap_err());
    assert!(e.contains("already holds a run") && e.contains("--resume"), "{e}");
    let e = format!("{:#}", run(&DpoConfig { beta: 0.2, ..cfg.clone() }, true).unwrap_err());
    assert!(e.contains("--beta"), "{e}");
    let e = format!("{:#}", run(&DpoConfig { loss: LossName::Ipo, ..cfg.clone() }, true).unwrap_err());
    assert!(e.contains("--loss"), "{e}");
    // Other preferences in the same file.
    let data = f.dir.path().join("other.jsonl");
    let text = std::fs::read_to_string(&f.data).unwrap().replace("bright", "shiny");
    std::fs::write(&data, text).unwrap();
    let e = format!("{:#}", run(&DpoConfig { data, ..cfg.clone() }, true).unwrap_err());
    assert!(e.contains("--data") || e.contains("no longer encode"), "{e}");
    // A damaged reference cache: one value changed, then the file cut short.
    let cache = cfg.out.join("reference-logprobs.bin");
    let mut bytes = std::fs::read(&cache).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&cache, &bytes).unwrap();
    let e = format!("{:#}", run(&cfg, true).unwrap_err());
    assert!(e.contains("reference-logprobs.bin") && e.contains("changed"), "{e}");
    std::fs::write(&cache, &bytes[..bytes.len() - 3]).unwrap();
    let e = format!("{:#}", run(&cfg, true).unwrap_err());
    assert!(e.contains("reference-logprobs.bin") && e.contains("bytes"), "{e}");
}

#[test]
fn dpo_refuses_settings_out_of_range_naming_the_flag() {
    let f = preference_fixture();
    let base = f.dpo_config("never");
    let cases: [(DpoConfig, &str); 7] = [
        (DpoConfig { beta: 0.0, ..base.clone() }, "--beta"),
        (DpoConfig { beta: f64::NAN, ..base.clone() }, "--beta"),
        (DpoConfig { label_smoothing: 0.5, ..base.clone() }, "--label-smoothing"),
        (DpoConfig { loss: LossName::Ipo, label_smoothing: 0.1, ..base.clone() }, "--label-smoothing"),
        (DpoConfig { prompts_per_step: 0, ..base.clone() }, "--prompts-per-step"),
        (DpoConfig { lr: -1.0, ..base.clone() }, "--lr"),
        (DpoConfig { eval_fraction: 1.0, ..base.clone() }, "--eval-fraction"),
    ];
    for (cfg, flag) in cases {
        let e = format!("{:#}", run(&cfg, false).unwrap_err());
        assert!(e.contains(flag), "{flag}: {e}");
    }
    assert!(!base.out.exists(), "a refused run leaves no folder behind");
    // A reference of another shape.
    let be = Cpu::<f32>::new();
    let other = f.dir.path().join("other-shape");
    let mut mcfg = rlhf::checkpoint::load(&f.base).unwrap().config;
    mcfg.n_embd = 8;
    let m = rlhf::model::Decoder::init(&be, mcfg, 1).unwrap();
    let ck = rlhf::checkpoint::Checkpoint::from_model(&be, &m, rlhf::checkpoint::ModelKind::Policy);
    rlhf::checkpoint::save(&other, &ck, None).unwrap();
    let cfg = DpoConfig { reference: Some(other), ..f.dpo_config("shape") };
    let e = format!("{:#}", run(&cfg, false).unwrap_err());
    assert!(e.contains("--reference") && e.contains("shape"), "{e}");
}

/// The same DPO run on the CUDA kernels (in the simulator) and on the CPU engine: every step's loss and
/// the trained policy agree to 1e-4 of scale (f32 on both sides, different summation orders; the
/// tolerance of tests/kernels_engine_sim.rs).
#[test]
fn dpo_on_the_simulated_kernels_follows_the_cpu_engine() {
    let f = preference_fixture();
    let cpu = DpoConfig { epochs: 0.75, ..f.dpo_config("cpu") };
    let sim = DpoConfig { out: f.dir.path().join("sim"), ..cpu.clone() };
    run(&cpu, false).unwrap();
    dpo(&rlhf::kernels::SimBackend::new(), &sim, false).unwrap();
    let (a, b) = (metrics(&cpu), metrics(&sim));
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        for k in ["loss", "margin", "chosen_logratio", "grad_norm"] {
            let (x, y) = (x[k].as_f64().unwrap(), y[k].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{k}: cpu {x} vs kernels {y}");
        }
    }
    let weights = |out: &std::path::Path| {
        rlhf::checkpoint::load(&rlhf::checkpoint::run_dir::latest(out).unwrap().unwrap()).unwrap().flat_params()
    };
    let (wa, wb) = (weights(&cpu.out), weights(&sim.out));
    let scale = wa.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = wa.iter().zip(&wb).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-4 * scale, "policy weights differ by {worst:e} (scale {scale})");
}
