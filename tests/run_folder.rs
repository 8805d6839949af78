//! Run folders under faults and misuse (issue 13): the divergence guard on the updated weights (D2), resuming
//! in `--out` (D3), runs killed before their first checkpoint and torn metrics (D4), resumes that change
//! settings, data or models (D17), SFT resume without its base (D18), the lock on a run folder (D19), and the
//! kind PPO stores its value model with (D11).

mod common;

use rlhf::backend::Cpu;
use rlhf::checkpoint::run_dir::{self, RunLock};
use rlhf::model::{AdamWConfig, Config, Decoder, ScalarHead, ScalarModel};
use rlhf::pipeline::ppo::{Hooks, PpoConfig};
use rlhf::pipeline::pretrain::{pretrain, PretrainConfig};
use rlhf::pipeline::run::LoopConfig;
use rlhf::pipeline::sft::{sft, SftConfig};
use rlhf::util::rng::Rng;
use std::path::{Path, PathBuf};

type Be = Cpu<f32>;

// ---------------------------------------------------------------- fixtures

/// A small corpus tokenized into shards, and its tokenizer.
fn prepared(dir: &Path) -> PathBuf {
    common::prepared_corpus(dir, 30_000)
}

fn pre_cfg(data: &Path, out: &Path, steps: u64) -> PretrainConfig {
    let vocab = rlhf::data::shards::Meta::load(data).unwrap().vocab_size;
    PretrainConfig {
        data: data.to_owned(),
        tokenizer: Default::default(),
        model: Config::gpt2(1, 2, 16, vocab, 16),
        batch: 2,
        seq: 8,
        eval_batches: 1,
        run: LoopConfig {
            out: out.to_owned(),
            steps,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 1,
            adamw: AdamWConfig::default(),
            eval_every: 2,
            save_every: 2,
            seed: 7,
            stop_after: None,
        },
    }
}

fn read_log(out: &Path) -> String {
    std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()
}

/// The metrics records without their wall-clock fields.
fn records(out: &Path) -> Vec<serde_json::Value> {
    let mut recs = rlhf::pipeline::metrics::read(&out.join("metrics.jsonl")).unwrap();
    for r in &mut recs {
        r.as_object_mut().unwrap().remove("tokens_per_s");
    }
    recs
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A tokenizer with the chat tokens, a base policy checkpoint, and SFT demonstrations.
struct SftFixture {
    dir: tempfile::TempDir,
    tokenizer: PathBuf,
    base: PathBuf,
    data: PathBuf,
}

fn sft_fixture() -> SftFixture {
    let dir = tempfile::tempdir().unwrap();
    let (tokenizer, base) = common::word_policy(dir.path(), 1, 32);
    let data = dir.path().join("sft.jsonl");
    let lines: String = (0..10)
        .map(|i| format!("{{\"prompt\": \"q {i}\", \"completion\": \"a {} answer\"}}\n", common::WORDS[i % 10]))
        .collect();
    std::fs::write(&data, lines).unwrap();
    SftFixture { dir, tokenizer, base, data }
}

impl SftFixture {
    fn config(&self, out: &str) -> SftConfig {
        SftConfig {
            base: self.base.clone(),
            data: self.data.clone(),
            tokenizer: rlhf::checkpoint::tokenizer::TokenizerArgs::path(self.tokenizer.clone()),
            batch: 2,
            epochs: 1.0,
            eval_fraction: 0.2,
            skip_bad: false,
            run: LoopConfig {
                out: self.dir.path().join(out),
                steps: 0,
                lr: 1e-3,
                min_lr: 1e-4,
                warmup: 1,
                adamw: AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() },
                eval_every: 2,
                save_every: 2,
                seed: 1,
                stop_after: None,
            },
        }
    }
}

const STOP: u32 = 1;
const PAD: u32 = 0;

fn ppo_models(be: &Be, seed: u64) -> (Decoder<Be>, ScalarModel<Be>) {
    let cfg = Config::gpt2(1, 2, 16, 16, 32);
    let sft = Decoder::init(be, cfg, 1).unwrap();
    let rm = ScalarModel { trunk: Decoder::init(be, cfg, seed).unwrap(), head: ScalarHead::init(be, 16, 3).unwrap() };
    (sft, rm)
}

fn ppo_prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (0..3 + rng.below(4)).map(|_| 2 + rng.below(14) as u32).collect()).collect()
}

fn ppo_cfg(out: &Path, iterations: u64) -> PpoConfig {
    let mut c = PpoConfig::new(out.to_owned(), STOP, PAD);
    c.iterations = iterations;
    c.batch = 4;
    c.minibatch = 4;
    c.ppo_epochs = 1;
    c.max_new_tokens = 4;
    c.save_every = 1;
    c.lr = 1e-3;
    c.value_lr = 1e-3;
    c
}

fn ppo(
    cfg: PpoConfig,
    prompts: &[Vec<u32>],
    sft: &Decoder<Be>,
    rm: &ScalarModel<Be>,
    resume: bool,
) -> anyhow::Result<()> {
    rlhf::pipeline::ppo::train(&Be::new(), cfg, prompts, sft, rm, Hooks::default(), resume).map(|_| ())
}

/// A PPO run of one iteration in `TMP/ppo`, with the models and prompts it was started with.
fn ppo_after_one_iteration() -> (Be, tempfile::TempDir, Decoder<Be>, ScalarModel<Be>, Vec<Vec<u32>>) {
    let be = Be::new();
    let tmp = tempfile::tempdir().unwrap();
    let (sft_m, rm) = ppo_models(&be, 2);
    let prompts = ppo_prompts(8, 9);
    ppo(ppo_cfg(&tmp.path().join("ppo"), 1), &prompts, &sft_m, &rm, false).unwrap();
    (be, tmp, sft_m, rm, prompts)
}

// ---------------------------------------------------------------- D2: the divergence guard

/// A learning rate that passes validation (finite, positive) but overflows f32 in the update: the loss and
/// gradient norm of the step are finite, the weights after it are not.
const OVERFLOW_LR: f64 = 1e300;

#[test]
fn d2_non_finite_weights_after_an_update_stop_the_run_without_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Be::new();
    let out = tmp.path().join("pre");
    let mut cfg = pre_cfg(&data, &out, 1);
    cfg.run.lr = OVERFLOW_LR;
    cfg.run.min_lr = 0.0;
    let e = format!("{:#}", pretrain(&be, cfg, None, false).unwrap_err());
    assert!(e.contains("stopped at step 1") && e.contains("non-finite") && e.contains("no checkpoint"), "{e}");
    assert!(run_dir::latest(&out).unwrap().is_none(), "a non-finite checkpoint was saved");

    // A run with good checkpoints cannot be resumed with the overflowing rate either: another --lr is refused.
    let out = tmp.path().join("pre2");
    let mut cfg = pre_cfg(&data, &out, 4);
    cfg.run.stop_after = Some(2);
    pretrain(&be, cfg, None, false).unwrap();
    let mut cfg = pre_cfg(&data, &out, 4);
    cfg.run.lr = OVERFLOW_LR;
    cfg.run.min_lr = 0.0;
    cfg.run.warmup = 0;
    let e = format!("{:#}", pretrain(&be, cfg.clone(), None, true).unwrap_err());
    assert!(e.contains("--lr"), "{e}");

    // The reward model: trunk and head.
    let f = sft_fixture();
    let ranked = f.dir.path().join("ranked.jsonl");
    let lines: String = (0..6)
        .map(|i| format!("{{\"prompt\": \"q {i}\", \"chosen\": \"a good answer\", \"rejected\": \"a bad answer\"}}\n"))
        .collect();
    std::fs::write(&ranked, lines).unwrap();
    let rcfg = rlhf::pipeline::reward::RewardConfig {
        base: f.base.clone(),
        data: ranked,
        tokenizer: rlhf::checkpoint::tokenizer::TokenizerArgs::path(f.tokenizer.clone()),
        sft_data: None,
        out: f.dir.path().join("rm"),
        prompts_per_step: 2,
        epochs: 2.0,
        lr: OVERFLOW_LR,
        eval_fraction: 0.2,
        skip_bad: false,
        seed: 7,
        save_every: 1,
        stop_after: None,
    };
    let e = format!("{:#}", rlhf::pipeline::reward::train(&be, &rcfg, false).unwrap_err());
    assert!(e.contains("stopped at step 1") && e.contains("non-finite"), "{e}");
    assert!(run_dir::latest(&rcfg.out).unwrap().is_none(), "a non-finite reward checkpoint was saved");

    // PPO: one update per iteration, so nothing after it would notice before the save.
    let (sft_m, rm) = ppo_models(&be, 2);
    let prompts = ppo_prompts(4, 9);
    for (name, policy) in [("policy", true), ("value", false)] {
        let out = tmp.path().join(format!("ppo-{name}"));
        let mut c = ppo_cfg(&out, 1);
        if policy {
            c.lr = OVERFLOW_LR;
        } else {
            c.value_lr = OVERFLOW_LR;
        }
        let e = format!("{:#}", ppo(c, &prompts, &sft_m, &rm, false).unwrap_err());
        assert!(e.contains("iteration 1") && e.contains("non-finite") && e.contains(name), "{e}");
        assert!(run_dir::latest(&out).unwrap().is_none(), "a non-finite PPO checkpoint was saved ({name})");
    }
}

#[test]
fn d2_cli_refuses_non_finite_or_negative_learning_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let bad_flags = [
        &["--lr", "inf"][..],
        &["--lr", "nan"],
        &["--lr=-1"],
        &["--lr", "0"],
        &["--min-lr-frac", "nan"],
        &["--min-lr-frac", "2"],
        &["--warmup=-1"],
        &["--warmup", "nan"],
    ];
    for bad in bad_flags {
        let out = tmp.path().join("cli");
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf"))
            .args(["pretrain", "--device", "cpu", "--steps", "1", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad:?} was accepted: {err}");
        let flag = bad[0].split('=').next().unwrap();
        assert!(err.contains(flag), "{bad:?}: {err}");
        assert!(run_dir::latest(&out).unwrap().is_none());
    }
}

// ---------------------------------------------------------------- D3: resume in --out

#[test]
fn d3_resume_continues_in_out_not_where_the_run_was_started() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Be::new();
    let (a, copy, moved) = (tmp.path().join("a"), tmp.path().join("copy"), tmp.path().join("moved"));
    let mut first = pre_cfg(&data, &a, 4);
    first.run.stop_after = Some(2);
    pretrain(&be, first, None, false).unwrap();
    let a_log = read_log(&a);
    // A copy resumed: the copy advances, the original does not.
    copy_dir(&a, &copy);
    let s = pretrain(&be, pre_cfg(&data, &copy, 4), None, true).unwrap();
    assert!(s.fit.checkpoint.starts_with(&copy), "{:?}", s.fit.checkpoint);
    assert_eq!(std::fs::read_to_string(a.join("latest")).unwrap(), "step-000002");
    assert_eq!(read_log(&a), a_log, "the original run's log changed");
    assert!(a.join("step-000002").is_dir());
    // A moved run resumed: the old path is not re-created.
    std::fs::rename(&a, &moved).unwrap();
    let s = pretrain(&be, pre_cfg(&data, &moved, 4), None, true).unwrap();
    assert!(s.fit.checkpoint.starts_with(&moved) && !a.exists());
    assert_eq!(records(&moved), records(&copy));

    // SFT, the same.
    let f = sft_fixture();
    let mut cfg = f.config("sft");
    cfg.run.stop_after = Some(2);
    sft(&be, cfg, false).unwrap();
    let (orig, sft_copy) = (f.dir.path().join("sft"), f.dir.path().join("sft-copy"));
    copy_dir(&orig, &sft_copy);
    let s = sft(&be, f.config("sft-copy"), true).unwrap();
    assert!(s.fit.checkpoint.starts_with(&sft_copy));
    assert_eq!(std::fs::read_to_string(orig.join("latest")).unwrap(), "step-000002");

    // PPO, moved.
    let (sft_m, rm) = ppo_models(&be, 2);
    let prompts = ppo_prompts(8, 9);
    let (p, pm) = (tmp.path().join("ppo"), tmp.path().join("ppo-moved"));
    ppo(ppo_cfg(&p, 1), &prompts, &sft_m, &rm, false).unwrap();
    std::fs::rename(&p, &pm).unwrap();
    ppo(ppo_cfg(&pm, 2), &prompts, &sft_m, &rm, true).unwrap();
    assert!(!p.exists(), "resuming a moved PPO run re-created its old folder");
    assert_eq!(std::fs::read_to_string(pm.join("latest")).unwrap(), "step-000002");
}

// ---------------------------------------------------------------- D4: killed before the first checkpoint

#[test]
fn d4_killed_before_latest_resumes_and_a_fresh_rerun_starts_a_clean_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Be::new();
    let whole = tmp.path().join("whole");
    pretrain(&be, pre_cfg(&data, &whole, 4), None, false).unwrap();
    // Killed after renaming step-000002 into place, before `latest` was written.
    let k = tmp.path().join("killed");
    let mut first = pre_cfg(&data, &k, 4);
    first.run.stop_after = Some(2);
    pretrain(&be, first, None, false).unwrap();
    std::fs::remove_file(k.join("latest")).unwrap();
    assert!(k.join("step-000002").is_dir());
    pretrain(&be, pre_cfg(&data, &k, 4), None, true).unwrap();
    assert_eq!(records(&k), records(&whole));
    let w = |d: &Path| std::fs::read(d.join("step-000004/model.safetensors")).unwrap();
    assert!(w(&whole) == w(&k), "the resumed run differs from the unbroken one");

    // Killed before any checkpoint: a stale log (with a torn last line) and no step folder. A fresh rerun
    // starts the log over.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::write(
        fresh.join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 9.0}\n{\"step\": 2, \"loss\": 8.0}\n{\"step\": 3, \"lo",
    )
    .unwrap();
    pretrain(&be, pre_cfg(&data, &fresh, 4), None, false).unwrap();
    assert_eq!(records(&fresh), records(&whole), "a fresh run kept the stale log");

    // A torn line past the checkpoint (a write that failed mid-line) is cut on resume.
    let t = tmp.path().join("torn");
    let mut first = pre_cfg(&data, &t, 4);
    first.run.stop_after = Some(2);
    pretrain(&be, first, None, false).unwrap();
    let mut log = read_log(&t);
    log += "{\"step\": 3, \"loss\": 1.2";
    std::fs::write(t.join("metrics.jsonl"), log).unwrap();
    pretrain(&be, pre_cfg(&data, &t, 4), None, true).unwrap();
    assert_eq!(records(&t), records(&whole));
}

#[test]
fn d4_metrics_log_cuts_a_torn_tail_and_never_pads() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("metrics.jsonl");
    std::fs::write(&path, "{\"a\":1}\n{\"b\"").unwrap();
    let mut log = rlhf::pipeline::metrics::MetricsLog::open(&path, None).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    log.write(&serde_json::json!({"c": 2})).unwrap();
    assert_eq!(rlhf::pipeline::metrics::read(&path).unwrap().len(), 2);
    drop(log);
    // A checkpoint's recorded length past the end of the log (a copied run without its log) is not padded.
    let other = tmp.path().join("short.jsonl");
    std::fs::write(&other, "{\"a\":1}\n").unwrap();
    rlhf::pipeline::metrics::MetricsLog::open(&other, Some(4096)).unwrap();
    assert_eq!(std::fs::read(&other).unwrap(), b"{\"a\":1}\n");
}

// ---------------------------------------------------------------- D17: resume refuses changes

#[test]
fn d17_pretrain_and_sft_resume_refuse_changed_settings_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Be::new();
    let out = tmp.path().join("pre");
    let mut first = pre_cfg(&data, &out, 4);
    first.run.stop_after = Some(2);
    pretrain(&be, first, None, false).unwrap();
    let mut c = pre_cfg(&data, &out, 4);
    c.run.lr = 1e-3;
    c.run.seed = 8;
    c.batch = 3;
    let e = format!("{:#}", pretrain(&be, c, None, true).unwrap_err());
    assert!(e.contains("--lr: 0.003 in the run, 0.001 now") && e.contains("--seed") && e.contains("--batch"), "{e}");
    let mut c = pre_cfg(&data, &out, 4);
    c.model.n_embd = 32;
    let e = format!("{:#}", pretrain(&be, c, None, true).unwrap_err());
    assert!(e.contains("n_embd"), "{e}");
    // The same shards with one token changed.
    let shard = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("train_"))
        .unwrap();
    let mut bytes = std::fs::read(&shard).unwrap();
    let i = 1024 + 2 * 10;
    bytes[i] = if bytes[i] == 5 { 6 } else { 5 };
    bytes[i + 1] = 0;
    std::fs::write(&shard, bytes).unwrap();
    let e = format!("{:#}", pretrain(&be, pre_cfg(&data, &out, 4), None, true).unwrap_err());
    assert!(e.contains("changed") && e.contains(&data.display().to_string()), "{e}");

    // SFT: a setting, then the data.
    let f = sft_fixture();
    let mut cfg = f.config("sft");
    cfg.run.stop_after = Some(2);
    sft(&be, cfg, false).unwrap();
    let mut c = f.config("sft");
    c.epochs = 2.0;
    c.run.lr = 2e-3;
    let e = format!("{:#}", sft(&be, c, true).unwrap_err());
    assert!(e.contains("--epochs") && e.contains("--lr") && e.contains("other settings"), "{e}");
    let text = std::fs::read_to_string(&f.data).unwrap();
    std::fs::write(&f.data, text.replacen("a good answer", "a bad answer", 1)).unwrap();
    let e = format!("{:#}", sft(&be, f.config("sft"), true).unwrap_err());
    assert!(e.contains("no longer encode"), "{e}");
    std::fs::write(&f.data, text).unwrap();
    // Pausing elsewhere and saving more often are allowed.
    let mut c = f.config("sft");
    c.run.save_every = 1;
    sft(&be, c, true).unwrap();
}

#[test]
fn d17_ppo_resume_refuses_other_models_prompts_and_settings() {
    let (be, tmp, sft_m, rm, prompts) = ppo_after_one_iteration();
    let out = tmp.path().join("ppo");
    let (_, other_rm) = ppo_models(&be, 5);
    let e = format!("{:#}", ppo(ppo_cfg(&out, 2), &prompts, &sft_m, &other_rm, true).unwrap_err());
    assert!(e.contains("--reward") && !e.contains("--prompts"), "{e}");
    let e = format!("{:#}", ppo(ppo_cfg(&out, 2), &ppo_prompts(8, 10), &sft_m, &rm, true).unwrap_err());
    assert!(e.contains("--prompts") && !e.contains("--reward"), "{e}");
    let other_ref = Decoder::init(&be, sft_m.cfg, 11).unwrap();
    let e = format!(
        "{:#}",
        rlhf::pipeline::ppo::train_from(
            &be,
            ppo_cfg(&out, 2),
            &prompts,
            &sft_m,
            &other_ref,
            &rm,
            Hooks::default(),
            true
        )
        .unwrap_err()
    );
    assert!(e.contains("--reference"), "{e}");
    let mut c = ppo_cfg(&out, 2);
    c.lr = 2e-3;
    c.target_kl = 3.0;
    let e = format!("{:#}", ppo(c, &prompts, &sft_m, &rm, true).unwrap_err());
    assert!(e.contains("--lr: 0.001 in the run, 0.002 now") && e.contains("--target-kl"), "{e}");
    // Unchanged: the resume goes ahead.
    ppo(ppo_cfg(&out, 2), &prompts, &sft_m, &rm, true).unwrap();
}

// ---------------------------------------------------------------- D11: the value model's kind

/// PPO's value model is stored as a value model, so a command that expects a reward model (`eval --reward`,
/// `score`, `ppo --reward`: all load through `reward::load`) refuses it, while PPO's own resume reads it back.
#[test]
fn d11_ppo_value_model_is_refused_where_a_reward_model_is_expected() {
    let (be, tmp, sft_m, rm, prompts) = ppo_after_one_iteration();
    let out = tmp.path().join("ppo");
    let value = out.join("step-000001/value");
    let ck = rlhf::checkpoint::load(&value).unwrap();
    assert_eq!(ck.kind, rlhf::checkpoint::ModelKind::Value);
    let e = match rlhf::pipeline::reward::load(&be, &value) {
        Ok(_) => panic!("{} was accepted as a reward model", value.display()),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("is a value model checkpoint, but a reward model is expected"), "{e}");
    ppo(ppo_cfg(&out, 2), &prompts, &sft_m, &rm, true).unwrap();
}

// ---------------------------------------------------------------- D18: SFT resume without --base

#[test]
fn d18_sft_resume_needs_no_base_and_reports_the_same_base_loss() {
    let be = Be::new();
    let f = sft_fixture();
    let whole = sft(&be, f.config("whole"), false).unwrap();
    let mut cfg = f.config("split");
    cfg.run.stop_after = Some(2);
    sft(&be, cfg, false).unwrap();
    std::fs::remove_dir_all(&f.base).unwrap();
    let resumed = sft(&be, f.config("split"), true).unwrap();
    assert_eq!(resumed.base_eval_loss.to_bits(), whole.base_eval_loss.to_bits());
    assert_eq!(resumed.fit.val_loss.to_bits(), whole.fit.val_loss.to_bits());
    assert_eq!(records(&f.dir.path().join("whole")), records(&f.dir.path().join("split")));
}

// ---------------------------------------------------------------- D19: one run per folder

#[test]
fn d19_a_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Be::new();
    let out = tmp.path().join("pre");
    let held = RunLock::acquire(&out).unwrap();
    let e = format!("{:#}", pretrain(&be, pre_cfg(&data, &out, 2), None, false).unwrap_err());
    assert!(e.contains(&out.display().to_string()) && e.contains("in use") && e.contains("process"), "{e}");
    assert!(!out.join("metrics.jsonl").exists(), "the refused run touched the folder");
    assert!(RunLock::acquire(&out).is_err(), "a second claim in one process");
    drop(held);
    // A lock left by a process that has ended is taken over.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(out.join("lock"), format!("{dead}\n")).unwrap();
    pretrain(&be, pre_cfg(&data, &out, 2), None, false).unwrap();
    assert!(!out.join("lock").exists(), "the lock outlived the run");
    // Released after a failing run too.
    let e = pretrain(&be, pre_cfg(&data, &out, 2), None, false).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"));
    assert!(!out.join("lock").exists());
}
