//! The binary as a user runs it: help, gradcheck, device selection, and a tiny end-to-end run.

use std::path::Path;
use std::process::Command;

fn rlhf(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("run rlhf");
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
    let (ok, text) = rlhf(&["bench", "--device", "cuda-sim", "--json"]);
    assert!(ok, "{text}");
    let json = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let names: Vec<&str> = v["kernels"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    for k in ["layernorm_forward", "layernorm_backward", "gelu_forward", "crossentropy", "adamw", "encoder_forward"] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
    let att = &v["attention"][0];
    assert!(att["unfused_vs_fused_err"].as_f64().unwrap() < 2e-2, "unfused attention disagrees: {att}");
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
