//! Pretraining runs: determinism, bit-identical resume, and the errors a user can run into.

mod common;

use rlhf::backend::Cpu;
use rlhf::model::{AdamWConfig, Config};
use rlhf::pipeline::pretrain::{pretrain, PretrainConfig};
use rlhf::pipeline::run::LoopConfig;
use std::path::{Path, PathBuf};

/// A small real-text corpus (the committed Austen sample's first chapters) tokenized into shards.
fn prepared(dir: &Path) -> PathBuf {
    common::prepared_corpus(dir, 60_000)
}

fn config(data: &Path, out: &Path, steps: u64) -> PretrainConfig {
    let vocab = rlhf::data::shards::Meta::load(data).unwrap().vocab_size;
    PretrainConfig {
        data: data.to_owned(),
        tokenizer: Default::default(),
        model: Config::gpt2(2, 2, 32, vocab, 32),
        batch: 4,
        seq: 16,
        eval_batches: 2,
        run: LoopConfig {
            out: out.to_owned(),
            steps,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 3,
            adamw: AdamWConfig::default(),
            eval_every: 4,
            save_every: 5,
            seed: 7,
            stop_after: None,
        },
    }
}

fn losses(out: &Path) -> Vec<(u64, f64)> {
    let recs = rlhf::pipeline::metrics::read(&out.join("metrics.jsonl")).unwrap();
    recs.iter().map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap())).collect()
}

#[test]
fn same_seed_same_losses_and_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Cpu::<f32>::new();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let sa = pretrain(&be, config(&data, &a, 12), None, false).unwrap();
    pretrain(&be, config(&data, &b, 12), None, false).unwrap();
    assert_eq!(losses(&a), losses(&b), "two runs with one seed differ");
    assert_eq!(losses(&a).len(), 12);
    let vocab = rlhf::data::shards::Meta::load(&data).unwrap().vocab_size as f64;
    assert!(
        sa.fit.val_loss < vocab.ln() && sa.fit.train_loss.is_finite(),
        "12 steps learnt nothing: val loss {} vs uniform {}",
        sa.fit.val_loss,
        vocab.ln()
    );
    // Stop after step 7 (checkpoints at 5 and 7), then resume to 12.
    let mut first = config(&data, &c, 12);
    first.run.stop_after = Some(7);
    assert_eq!(pretrain(&be, first, None, false).unwrap().fit.steps, 7);
    let sc = pretrain(&be, config(&data, &c, 12), None, true).unwrap();
    assert_eq!(losses(&a), losses(&c), "resumed run differs from the unbroken one");
    assert_eq!(sc.fit.steps, 12);
    // The final weights are identical too.
    let wa = std::fs::read(a.join("step-000012/model.safetensors")).unwrap();
    let wc = std::fs::read(c.join("step-000012/model.safetensors")).unwrap();
    assert!(wa == wc, "final checkpoints differ");
}

#[test]
fn user_errors_are_clear_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = prepared(tmp.path());
    let be = Cpu::<f32>::new();
    let out = tmp.path().join("run");
    // Sequence longer than the context.
    let mut cfg = config(&data, &out, 3);
    cfg.seq = 64;
    let e = pretrain(&be, cfg, None, false).unwrap_err().to_string();
    assert!(e.contains("--seq 64") && e.contains("n_positions = 32"), "{e}");
    // A run, then the same --out again without --resume.
    pretrain(&be, config(&data, &out, 5), None, false).unwrap();
    let e = pretrain(&be, config(&data, &out, 5), None, false).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    // A diverging run: the loss stops being finite; the error names the step and the last good checkpoint,
    // which stays loadable.
    let nan_out = tmp.path().join("nan");
    let mut cfg = config(&data, &nan_out, 40);
    cfg.run.lr = 1e35;
    cfg.run.warmup = 0;
    cfg.run.adamw.grad_clip = 0.0;
    let e = pretrain(&be, cfg, None, false).unwrap_err().to_string();
    assert!(e.contains("at step") && (e.contains("NaN") || e.contains("inf")), "{e}");
    if let Some(last) = rlhf::checkpoint::run_dir::latest(&nan_out).unwrap() {
        assert!(e.contains(&last.display().to_string()), "{e}");
        rlhf::checkpoint::load(&last).unwrap();
    }
    // Resume with nothing to resume from.
    let e = pretrain(&be, config(&data, &tmp.path().join("empty"), 5), None, true).unwrap_err().to_string();
    assert!(e.contains("no checkpoint"), "{e}");
}
