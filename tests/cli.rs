//! The binary as a user runs it: help, gradcheck, device selection, and a tiny end-to-end run.

use std::path::Path;
use std::process::Command;

fn rlhf(args: &[&str]) -> (bool, String) {
    rlhf_env(args, &[])
}

fn rlhf_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).envs(env.iter().copied()).output().expect("run rlhf");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn help_lists_every_command() {
    let (ok, text) = rlhf(&["--help"]);
    assert!(ok);
    for cmd in ["tokenizer", "prepare", "pretrain", "sample", "gradcheck", "bench", "export"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
}

#[test]
fn gradcheck_reports_every_op_and_passes() {
    let (ok, text) = rlhf(&["gradcheck"]);
    assert!(ok, "{text}");
    for op in
        ["embedding", "layernorm", "linear", "attention", "gelu", "residual", "crossentropy", "adamw", "gpt2 model"]
    {
        assert!(text.contains(op), "gradcheck table lacks {op}:\n{text}");
    }
    let (ok, json) = rlhf(&["gradcheck", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.as_array().unwrap().iter().all(|r| r["ok"] == true));
}

/// This machine has no GPU (CI never does): `--device cuda` must fail with the reason, `auto` must fall
/// back to the CPU and say so.
#[test]
fn device_cuda_without_a_gpu_fails_clearly_and_auto_runs_on_the_cpu() {
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        println!("a CUDA driver is present here: the no-GPU behaviour is not exercised on this machine");
        return;
    }
    let (ok, text) = rlhf(&[
        "bench", "--preset", "tiny", "--vocab", "256", "--batch", "2", "--seq", "16", "--steps", "1", "--device",
        "cuda",
    ]);
    assert!(!ok, "--device cuda succeeded without a GPU:\n{text}");
    assert!(text.contains("--device cuda is not available") && text.contains("libcuda"), "{text}");
    let (ok, text) = rlhf(&[
        "bench", "--preset", "tiny", "--vocab", "256", "--batch", "2", "--seq", "16", "--steps", "1", "--device",
        "auto", "--json",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("\"device\": \"cpu"), "{text}");
    let (ok, text) = rlhf(&["gradcheck", "--device", "cuda"]);
    assert!(!ok && text.contains("--device cuda is not available"), "{text}");
}

/// The GPU commands' code, run on the simulated kernels: `gradcheck --device cuda-sim` (every kernel op
/// and a training step, f32 and bf16, against the CPU engine) and the GPU benchmark report at tiny shapes.
#[test]
fn gradcheck_and_bench_on_the_simulated_kernels() {
    let (ok, text) = rlhf(&["gradcheck", "--device", "cuda-sim"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("bf16 train step: every gradient") && text.contains("f32 attention backward (head size 64)"),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let sections = tmp.path().join("sections.jsonl");
    let (ok, text) = rlhf_env(
        &["bench", "--device", "cuda-sim", "--json", "--sections", sections.to_str().unwrap()],
        &[("RLHF_CUDA_PROFILE", "1")],
    );
    assert!(ok, "{text}");
    // One JSON line per section, written as each finished.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&sections).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let done: Vec<&str> = lines.iter().map(|l| l["section"].as_str().unwrap()).collect();
    assert_eq!(done[..2], ["ceilings (copy, bf16 GEMM)", "memory-bound kernels"], "{done:?}");
    assert!(lines.iter().all(|l| l["ok"] == true && (l["result"].is_object() || l["result"].is_array())), "{lines:?}");
    let json = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let names: Vec<&str> = v["kernels"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    for k in ["layernorm_forward", "layernorm_backward", "gelu_forward", "crossentropy", "adamw", "encoder_forward"] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    let att = &v["attention"][0];
    assert!(att["unfused_vs_fused_err"].as_f64().unwrap() < 2e-2, "unfused attention disagrees: {att}");
    let dec = &v["decode"][0];
    assert!(dec["decode_vs_fused_err"].as_f64().unwrap() < 2e-2, "the decode kernel disagrees: {dec}");
    assert!(v["train_step"][0]["loss_first"].as_f64().unwrap().is_finite(), "{text}");
    // RLHF_CUDA_PROFILE=1: time per kernel name, kernels and products both, shares summing to 1.
    let prof = v["profile"].as_array().unwrap();
    let kernel = |n: &str| prof.iter().find(|r| r["kernel"].as_str().unwrap().starts_with(n));
    assert!(kernel("gelu_forward_bf16").is_some_and(|r| r["calls"].as_u64().unwrap() >= 1), "{prof:?}");
    assert!(kernel("gemm ").is_some(), "{prof:?}");
    // Recorded after a warmup step: the weights' one-time bf16 copies are not in it (what remains is one
    // cast a step, the f32 logits' gradient read in bf16 by the LM head's backward products).
    let casts = kernel("cast_f32_to_bf16").map_or(0, |r| r["calls"].as_u64().unwrap());
    println!("cast_f32_to_bf16 calls in the profile: {casts}");
    assert!(casts <= 3, "{casts} casts in 3 steps or fewer: {prof:?}");
    let share: f64 = prof.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-9, "{share}");
}

/// The GPU report at a Llama-family preset (simulated): the family's own kernel rows and grouped-query
/// attention, and its training step.
#[test]
fn the_gpu_report_of_a_llama_preset_on_the_simulated_kernels() {
    let (ok, text) = rlhf(&["bench", "--device", "cuda-sim", "--preset", "llama-tiny", "--json"]);
    assert!(ok, "{text}");
    let json = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let names: Vec<&str> = v["kernels"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    for k in ["rmsnorm_forward", "rmsnorm_backward", "swiglu_forward", "swiglu_backward", "rope_forward"] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    assert!(names.contains(&"copy_rows (embedding)") && !names.contains(&"layernorm_forward"), "{names:?}");
    let att = &v["attention"][0];
    assert_eq!((att["nh"].as_u64(), att["nkv"].as_u64()), (Some(4), Some(2)), "{att}");
    assert!(att["fused_fwd_bwd_ms"].as_f64().unwrap() > 0.0, "{att}");
    let dec = &v["decode"][0];
    assert_eq!((dec["nkv"].as_u64(), dec["tk"].as_u64()), (Some(2), Some(64)), "{dec}");
    assert!(dec["decode_vs_fused_err"].as_f64().unwrap() < 2e-2, "the decode kernel disagrees: {dec}");
    assert!(v["train_step"][0]["loss_first"].as_f64().unwrap().is_finite(), "{text}");
}

#[test]
fn tokenizer_prepare_pretrain_sample_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).display().to_string();
    let text = rlhf::tokenizer::read_text(Path::new("data/corpus/austen.txt.gz")).unwrap();
    std::fs::write(d("corpus.txt"), &text[..40_000]).unwrap();
    let steps: [Vec<String>; 4] = [
        ["tokenizer", "train", "--input", &d("corpus.txt"), "--vocab-size", "300", "--out", &d("tok.json")]
            .map(String::from)
            .to_vec(),
        ["prepare", "--tokenizer", &d("tok.json"), "--input", &d("corpus.txt"), "--out", &d("tokens")]
            .map(String::from)
            .to_vec(),
        [
            "pretrain",
            "--data",
            &d("tokens"),
            "--out",
            &d("run"),
            "--steps",
            "4",
            "--batch",
            "2",
            "--seq",
            "32",
            "--eval-every",
            "2",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec(),
        [
            "sample",
            "--checkpoint",
            &d("run"),
            "--tokenizer",
            &d("tok.json"),
            "--prompt",
            "It was",
            "--max-new-tokens",
            "5",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for args in &steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = rlhf(&args);
        assert!(ok, "rlhf {} failed:\n{out}", args.join(" "));
    }
    assert!(tmp.path().join("run/loss.svg").is_file());
    // A tokenizer of another vocabulary is refused by the model.
    let (_, _) =
        rlhf(&["tokenizer", "train", "--input", &d("corpus.txt"), "--vocab-size", "280", "--out", &d("small.json")]);
    let (ok, out) = rlhf(&["sample", "--checkpoint", &d("run"), "--tokenizer", &d("small.json"), "--device", "cpu"]);
    assert!(!ok && out.contains("small.json"), "a mismatched tokenizer was accepted:\n{out}");
}

/// The subcommands' flags, parsed as the binary parses them (each `Args` struct under a test parser).
mod flags {
    use clap::Parser;
    use rlhf::cli::{ppo::PpoArgs, pretrain::PretrainArgs, reward::RewardArgs, sft::SftArgs};

    #[derive(Parser)]
    struct P<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }

    pub fn parse<T: clap::Args>(args: &[&str]) -> Result<T, clap::Error> {
        P::<T>::try_parse_from(std::iter::once("rlhf").chain(args.iter().copied())).map(|p| p.args)
    }

    pub fn ppo(extra: &[&str]) -> PpoArgs {
        let req = ["--policy", "p", "--reward", "r", "--prompts", "q.jsonl", "--tokenizer", "t.json"];
        parse(&[&req[..], extra].concat()).unwrap()
    }
    pub fn sft(extra: &[&str]) -> SftArgs {
        parse(&[&["--base", "b", "--data", "d.jsonl", "--tokenizer", "t.json"][..], extra].concat()).unwrap()
    }
    pub fn reward(extra: &[&str]) -> RewardArgs {
        parse(&[&["--base", "b", "--data", "d.jsonl", "--tokenizer", "t.json"][..], extra].concat()).unwrap()
    }
    pub fn pretrain(extra: &[&str]) -> PretrainArgs {
        parse(&[&["--data", "tokens"][..], extra].concat()).unwrap()
    }
}

/// Each default is defined once: the flags' defaults are the library configs' defaults, and the values
/// the demo relies on (the CLI's, where the two used to disagree) are the ones kept.
#[test]
fn defaults_have_one_source() {
    use rlhf::pipeline::ppo::PpoConfig;
    let args = flags::ppo(&[]);
    let parsed = PpoConfig { stop_token: 3, pad_token: 4, ..args.config };
    let lib = PpoConfig::new("runs/ppo".into(), 3, 4);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::to_value(&lib).unwrap());
    // --sample-every was 5 on the command line and 10 in `PpoConfig::new`: the command line's value stays.
    assert_eq!(lib.sample_every, 5);
    assert_eq!((lib.iterations, lib.batch, lib.minibatch, lib.ppo_epochs, lib.save_every), (60, 32, 8, 4, 10));
    assert_eq!(
        (lib.lr, lib.value_lr, lib.init_kl_coef, lib.no_eos_penalty, lib.ratio_tol),
        (5e-5, 1e-4, 0.05, 1.0, 1e-4)
    );
    assert_eq!(lib.adamw.weight_decay, 0.0);

    // SFT: the warmup and final learning rate that were hard-coded in the command are flags with those values.
    let sft = flags::sft(&[]).settings.config().unwrap();
    assert_eq!((sft.batch, sft.epochs, sft.eval_fraction), (16, 2.0, 0.1));
    let r = &sft.run;
    assert_eq!((r.steps, r.lr, r.warmup, r.eval_every, r.save_every, r.seed), (0, 3e-4, 10, 50, 100, 1));
    assert!((r.min_lr - 3e-5).abs() < 1e-18 && r.adamw.weight_decay == 0.0, "{r:?}");

    let pre = flags::pretrain(&[]).settings.config(rlhf::model::Config::preset("tiny", 300).unwrap()).unwrap();
    assert_eq!((pre.batch, pre.seq, pre.eval_batches), (16, 128, 8));
    let r = &pre.run;
    assert_eq!((r.steps, r.lr, r.warmup, r.eval_every, r.save_every, r.seed), (1000, 1e-3, 50, 100, 250, 1337));
    assert_eq!((r.adamw.weight_decay, r.adamw.grad_clip), (0.1, 1.0));
    assert!((r.min_lr - 1e-4).abs() < 1e-18, "{r:?}");

    // The reward model's flags are its saved configuration; an old run's record without `save_every` reads
    // back with the flag's default.
    let rw = flags::reward(&[]).config;
    assert_eq!(
        (rw.prompts_per_step, rw.epochs, rw.lr, rw.eval_fraction, rw.seed, rw.save_every),
        (8, 1.0, 1e-4, 0.15, 1, 50)
    );
    let mut old = serde_json::to_value(&rw).unwrap();
    old.as_object_mut().unwrap().remove("save_every");
    old.as_object_mut().unwrap().remove("stop_after");
    let back: rlhf::pipeline::reward::RewardConfig = serde_json::from_value(old).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&rw).unwrap());
}

fn err_of(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.expect_err("a bad value was accepted"))
}

/// Out-of-range settings are refused by the step's own `validate`, with the flag named; nothing is clamped.
#[test]
fn bad_settings_are_refused_with_the_flag_named() {
    let ppo = |extra: &[&str]| {
        let a = flags::ppo(extra);
        err_of(rlhf::pipeline::ppo::PpoConfig { stop_token: 3, pad_token: 4, ..a.config }.validate(100))
    };
    assert!(ppo(&["--batch", "0", "--minibatch", "0"]).contains("--batch must be at least 1 (got 0)"));
    assert!(ppo(&["--lr", "nan"]).contains("--lr must be a positive finite number (got NaN)"));
    assert!(ppo(&["--value-lr", "inf"]).contains("--value-lr must be a positive finite number (got inf)"));
    assert!(ppo(&["--save-every", "0"]).contains("--save-every must be at least 1 (got 0)"));
    // Truncated sampling is refused: PPO needs the log-probabilities of the distribution it sampled.
    assert!(ppo(&["--top-p", "0.9"]).contains("--top-k 0 / --top-p 0.9: PPO rollouts sample the whole"));
    assert!(ppo(&["--top-k", "40"]).contains("--top-k 40 / --top-p 1"));
    assert!(ppo(&["--lam", "1.5"]).contains("--lam must be in [0, 1] (got 1.5)"));
    assert!(ppo(&["--no-eos-penalty=-inf"]).contains("--no-eos-penalty must be a finite number >= 0 (got -inf)"));
    assert!(ppo(&["--no-eos-penalty=-1"]).contains("--no-eos-penalty must be a finite number >= 0 (got -1)"));
    assert!(ppo(&["--minibatch", "64"]).contains("--minibatch 64 exceeds --batch 32"));

    let sft = |extra: &[&str]| err_of(flags::sft(extra).settings.config());
    assert!(sft(&["--eval-fraction", "0"]).contains("--eval-fraction must be in (0, 1) (got 0)"));
    assert!(sft(&["--eval-fraction", "1"]).contains("--eval-fraction must be in (0, 1) (got 1)"));
    assert!(sft(&["--eval-every", "0"]).contains("--eval-every must be at least 1 (got 0)"));
    assert!(sft(&["--epochs", "nan"]).contains("--epochs must be a positive finite number (got NaN)"));
    assert!(sft(&["--min-lr-frac", "2"]).contains("--min-lr-frac must be in [0, 1] (got 2)"));

    let tiny = || rlhf::model::Config::preset("tiny", 300).unwrap();
    let pre = |extra: &[&str]| err_of(flags::pretrain(extra).settings.config(tiny()));
    assert!(pre(&["--eval-batches", "0"]).contains("--eval-batches must be at least 1 (got 0)"));
    assert!(pre(&["--steps", "0"]).contains("--steps must be at least 1 (got 0)"));
    assert!(pre(&["--grad-clip", "nan"]).contains("--grad-clip must be a finite number >= 0 (got NaN)"));
    assert!(pre(&["--stop-after", "0"]).contains("--stop-after must be at least 1 (got 0)"));

    let rw = |extra: &[&str]| err_of(flags::reward(extra).config.validate());
    assert!(rw(&["--prompts-per-step", "0"]).contains("--prompts-per-step must be at least 1 (got 0)"));
    assert!(rw(&["--eval-fraction", "1.5"]).contains("--eval-fraction must be in (0, 1) (got 1.5)"));

    // The binary refuses them before reading any file.
    let (ok, out) =
        rlhf(&["sft", "--base", "nowhere", "--data", "d.jsonl", "--tokenizer", "t.json", "--save-every", "0"]);
    assert!(!ok && out.contains("--save-every must be at least 1 (got 0)"), "{out}");
    let (ok, out) = rlhf(&["reward", "--base", "nowhere", "--data", "d.jsonl", "--tokenizer", "t.json", "--lr", "nan"]);
    assert!(!ok && out.contains("--lr must be a positive finite number (got NaN)"), "{out}");
}

/// The commands that are not training steps refuse their bad values the same way, before reading files.
#[test]
fn other_commands_refuse_bad_values_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["sample", "--checkpoint", "c", "--tokenizer", "t", "--num-samples", "0"],
            "--num-samples must be at least 1 (got 0)",
        ),
        (
            &["sample", "--checkpoint", "c", "--tokenizer", "t", "--temperature", "nan"],
            "--temperature must be a finite number >= 0 (got NaN)",
        ),
        (&["bench", "--batch", "0"], "--batch must be at least 1 (got 0)"),
        (
            &["label", "--policy", "p", "--prompts", "q", "--tokenizer", "t", "--out", "o", "-k", "1"],
            "-k must be at least 2 (got 1)",
        ),
        (
            &[
                "eval",
                "--policy",
                "p",
                "--sft",
                "s",
                "--reward",
                "r",
                "--prompts",
                "q",
                "--tokenizer",
                "t",
                "--max-new-tokens",
                "0",
            ],
            "--max-new-tokens must be at least 1 (got 0)",
        ),
    ];
    for (args, want) in cases {
        let (ok, out) = rlhf(args);
        assert!(!ok && out.contains(want), "rlhf {}: {out}", args.join(" "));
    }
}

/// Issue 13, D20: output into a closed pipe (`rlhf ... | head -1`) ends the process quietly, not in a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["gradcheck"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rlhf");
    drop(child.stdout.take()); // the reader goes away before anything is printed
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success() || out.status.signal() == Some(libc::SIGPIPE), "{:?}: {err}", out.status);
}
