//! A Llama-family model through the whole pipeline, as a user runs it: tokenizer, token shards, pretraining
//! of the `llama-tiny` preset (grouped-query attention, RoPE, RMSNorm, SwiGLU), SFT, K = 3 answers ranked by
//! a judge command, the reward model, PPO against it, DPO on the same rankings, and the export of the PPO
//! policy as a Hugging Face `LlamaForCausalLM` folder that reads back identical; once with our chat tokens
//! and once with ChatML's (`<|im_start|>`, `<|im_end|>`, as SmolLM2 and Qwen2.5 have them), then a turn of
//! `rlhf chat`. Every run is a few steps:
//! this checks that each step accepts the model, trains it (finite losses, checkpoints of the right class)
//! and hands it to the next, not that it learns (tests/ppo.rs and docs/demo.md do that on GPT-2).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn rlhf(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("run rlhf");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rlhf {} failed:\n{text}", args.join(" "));
    text
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The `architectures` entry of the latest checkpoint of a run folder.
fn architecture(run: &Path) -> String {
    let ck = rlhf::checkpoint::run_dir::resolve_checkpoint(run).unwrap();
    let cfg = json(&ck.join("config.json"));
    assert_eq!(cfg["model_type"], "llama", "{}", ck.display());
    cfg["architectures"][0].as_str().unwrap().to_string()
}

/// Every value of `key` in a run's metrics.jsonl is finite, and there is at least one.
fn finite_metric(run: &Path, key: &str) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let values: Vec<f64> =
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get(key)?.as_f64()).collect();
    assert!(!values.is_empty() && values.iter().all(|x| x.is_finite()), "{}: {key} = {values:?}", run.display());
}

#[test]
fn llama_tiny_through_pretraining_sft_reward_ppo_dpo_and_export() {
    pipeline("rlhf", "<|end|>");
}

#[test]
fn llama_tiny_with_chatml_tokens_through_the_pipeline() {
    pipeline("chatml", "<|im_end|>");
}

/// The pipeline with a tokenizer of `chat_format`, whose answers end with `end`.
fn pipeline(chat_format: &str, end: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = |p: &str| tmp.path().join(p).display().to_string();
    let text = rlhf::tokenizer::read_text(Path::new("data/corpus/austen.txt.gz")).unwrap();
    std::fs::write(d("corpus.txt"), &text[..30_000]).unwrap();
    let tok = ["tokenizer", "train", "--input", &d("corpus.txt"), "--vocab-size", "300", "--out", &d("tok.json")];
    rlhf(&[&tok[..], &["--chat-format", chat_format]].concat());
    rlhf(&["prepare", "--tokenizer", &d("tok.json"), "--input", &d("corpus.txt"), "--out", &d("tokens")]);
    let steps = ["--steps", "3", "--batch", "2", "--seq", "32", "--eval-every", "3", "--device", "cpu"];
    rlhf(&[&["pretrain", "--preset", "llama-tiny", "--data", &d("tokens"), "--out", &d("pre")][..], &steps].concat());
    assert_eq!(architecture(&tmp.path().join("pre")), "LlamaForCausalLM");

    let prompts = ["Mr. Darcy", "Elizabeth", "the ball", "a letter", "Miss Bennet", "the weather"];
    let sft: String = prompts
        .iter()
        .map(|p| format!("{{\"prompt\": \"{p} was\", \"completion\": \" very agreeable.\"}}\n"))
        .collect();
    std::fs::write(d("sft.jsonl"), sft).unwrap();
    std::fs::write(
        d("prompts.jsonl"),
        prompts.iter().map(|p| format!("{{\"prompt\": \"{p}\"}}\n")).collect::<String>(),
    )
    .unwrap();
    let cpu = ["--device", "cpu"];
    rlhf(
        &[
            &["sft", "--base", &d("pre"), "--data", &d("sft.jsonl"), "--out", &d("sft")][..],
            &["--epochs", "1", "--batch", "2"],
            &cpu,
        ]
        .concat(),
    );
    assert_eq!(architecture(&tmp.path().join("sft")), "LlamaForCausalLM");

    // A judge that prefers longer answers: one score per line read.
    let judge = "while read -r l; do echo ${#l}; done";
    let label = ["label", "--policy", &d("sft"), "--prompts", &d("prompts.jsonl"), "-k", "3", "--judge", judge];
    rlhf(&[&label[..], &["--max-new-tokens", "6", "--out", &d("ranked.jsonl")], &cpu].concat());
    rlhf(
        &[
            &["reward", "--base", &d("sft"), "--data", &d("ranked.jsonl"), "--out", &d("rm")][..],
            &["--epochs", "1", "--prompts-per-step", "2"],
            &cpu,
        ]
        .concat(),
    );
    assert_eq!(architecture(&tmp.path().join("rm")), "LlamaForSequenceClassification");

    let ppo =
        ["ppo", "--policy", &d("sft"), "--reward", &d("rm"), "--prompts", &d("prompts.jsonl"), "--out", &d("ppo")];
    let sizes = ["--iterations", "2", "--batch", "4", "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "6"];
    rlhf(&[&ppo[..], &sizes, &cpu].concat());
    let ppo_dir = tmp.path().join("ppo");
    assert_eq!(architecture(&ppo_dir), "LlamaForCausalLM");
    finite_metric(&ppo_dir, "kl");

    rlhf(
        &[
            &["dpo", "--base", &d("sft"), "--data", &d("ranked.jsonl"), "--out", &d("dpo")][..],
            &["--epochs", "1", "--prompts-per-step", "2"],
            &cpu,
        ]
        .concat(),
    );
    assert_eq!(architecture(&tmp.path().join("dpo")), "LlamaForCausalLM");

    rlhf(&["export", "--checkpoint", &d("ppo"), "--out", &d("hf")]);
    let cfg = json(&tmp.path().join("hf/config.json"));
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["num_key_value_heads"], 2);
    let (a, b) = (
        rlhf::checkpoint::load(&tmp.path().join("hf")).unwrap(),
        rlhf::checkpoint::load(&rlhf::checkpoint::run_dir::resolve_checkpoint(&ppo_dir).unwrap()).unwrap(),
    );
    assert!(a == b, "the exported PPO policy does not read back identical");
    // The export names the format's end token as EOS, and its chat template is the format's.
    let tc = json(&tmp.path().join("hf/tokenizer_config.json"));
    assert_eq!(tc["eos_token"], end);
    let tok = rlhf::tokenizer::Tokenizer::load(tmp.path().join("hf/tokenizer.json")).unwrap();
    let ct = rlhf::data::chat::ChatFormat::from_tokenizer(&tok).unwrap();
    assert_eq!(ct.style.name(), chat_format);
    assert_eq!(tc["chat_template"], ct.chat_template());
    assert_eq!(cfg["eos_token_id"].as_u64(), Some(ct.end as u64));

    // Two turns of `rlhf chat` on the PPO policy, each answer on its own line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["chat", "--checkpoint", &d("ppo"), "--max-new-tokens", "5", "--device", "cpu"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"Mr. Darcy\nthe ball\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.lines().count() >= 2 && said.ends_with('\n'), "{said}");
}
