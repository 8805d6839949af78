//! Bad input to the loaders and commands (issue 13's audit, D5, D6, D8, D9, D13-D16): each case is refused
//! with one clear error naming the file and the field, line, tensor or flag, never an abort, a panic or a
//! silent acceptance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rlhf::checkpoint::tokenizer::TokenizerArgs;
use rlhf::checkpoint::{self, Checkpoint, ModelKind};
use rlhf::data::prepare::{self, DocSplit, PrepareArgs};
use rlhf::data::shards::{Dataset, Meta};
use rlhf::model::Config;
use rlhf::tokenizer::{Tokenizer, SPECIAL_TOKENS};

/// Runs the binary: (exit code, stdout + stderr).
fn rlhf(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("run rlhf");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A refusal: exit code 1 (not an abort or a panic's 101) and the text of the error.
fn refused(args: &[&str]) -> String {
    let (code, out) = rlhf(args);
    assert_eq!(code, Some(1), "rlhf {} did not fail cleanly:\n{out}", args.join(" "));
    assert!(!out.contains("panicked"), "rlhf {} panicked:\n{out}", args.join(" "));
    out
}

fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("bad input was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `rlhf pretrain --data DATA --out OUT --steps 1 --device cpu EXTRA...`, which must be refused.
fn refused_pretrain(data: &Path, out: &Path, extra: &[&str]) -> String {
    let (data, out) = (s(data), s(out));
    let base = ["pretrain", "--data", &data, "--out", &out, "--steps", "1", "--device", "cpu"];
    refused(&[&base[..], extra].concat())
}

/// A chat tokenizer of 300 ids trained once on the committed corpus, and that corpus' text.
fn shared() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static TOK: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let text = rlhf::tokenizer::read_text(Path::new("data/corpus/austen.txt.gz")).unwrap();
        let corpus = dir.path().join("corpus.txt");
        std::fs::write(&corpus, &text[..30_000]).unwrap();
        let tok = Tokenizer::train(std::slice::from_ref(&corpus), 300, &SPECIAL_TOKENS).unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        (dir, path, corpus)
    })
}

fn tokenizer_path() -> &'static Path {
    &shared().1
}

/// `prepare` of the shared corpus into `out`.
fn prepared(out: &Path, val_fraction: f64, seed: u64) {
    let (_, tok, corpus) = shared();
    prepare::run(PrepareArgs {
        tokenizer: tok.clone(),
        input: vec![corpus.clone()],
        out: out.to_path_buf(),
        val_fraction,
        seed,
        documents: DocSplit::Paragraphs,
        shard_tokens: 1 << 20,
    })
    .unwrap();
}

/// A small random policy checkpoint of `vocab` ids.
fn tiny_checkpoint(vocab: usize) -> Checkpoint {
    let cfg = Config::gpt2(1, 2, 16, vocab, 32);
    let n = cfg.num_params();
    let params: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.04).collect();
    Checkpoint::from_flat(cfg, ModelKind::Policy, &params, vec![]).unwrap()
}

fn saved_checkpoint(dir: &Path, vocab: usize) -> Checkpoint {
    let ck = tiny_checkpoint(vocab);
    checkpoint::save(dir, &ck, None).unwrap();
    ck
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

// ------------------------------------------------------------------------------------------ D5: sizes

/// `config.json` with `n_layer` 1e8 used to abort on allocation (exit 134).
#[test]
fn d5_config_json_with_a_huge_n_layer_is_refused_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    saved_checkpoint(&ck, 300);
    edit_json(&ck.join("config.json"), |v| v["n_layer"] = serde_json::json!(100_000_000u64));
    let out = refused(&["export", "--checkpoint", &s(&ck), "--out", &s(&tmp.path().join("hf"))]);
    assert!(out.contains("config.json") && out.contains("n_layer is 100000000"), "{out}");
    // In range but not what the file holds: the missing tensor is named.
    edit_json(&ck.join("config.json"), |v| v["n_layer"] = serde_json::json!(900));
    let e = err(checkpoint::load(&ck));
    assert!(e.contains("model.safetensors") && e.contains("'h.1.ln_1.weight' is missing"), "{e}");
    assert!(!tmp.path().join("hf").exists());
}

/// `meta.json` with `vocab_size` 1e11 used to abort on allocation when pretraining a fresh model.
#[test]
fn d5_meta_json_with_a_huge_vocab_size_is_refused_naming_the_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    prepared(&data, 0.1, 1);
    edit_json(&data.join("meta.json"), |v| v["vocab_size"] = serde_json::json!(100_000_000_000u64));
    let out = refused_pretrain(&data, &tmp.path().join("run"), &[]);
    assert!(out.contains("meta.json") && out.contains("vocab_size is 100000000000"), "{out}");
    let e = err(Dataset::open(&data, "train", 300));
    assert!(e.contains("meta.json") && e.contains("vocab_size"), "{e}");
}

fn llmc_header(dims: [i32; 6]) -> Vec<u8> {
    let mut h = [0i32; 256];
    h[0] = rlhf::checkpoint::llmc::MAGIC;
    h[1] = rlhf::checkpoint::llmc::VERSION_F32;
    h[2..8].copy_from_slice(&dims);
    h.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A crafted llm.c header (C = 2^30, Vp = 2^31 - 1) used to wrap the size check and panic.
#[test]
fn d5_crafted_llmc_headers_are_refused_naming_the_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("crafted.bin");
    // (maxT, V, L, NH, C, Vp)
    std::fs::write(&p, llmc_header([1024, 50257, 12, 16, 1 << 30, i32::MAX])).unwrap();
    let e = err(checkpoint::load(&p));
    assert!(e.contains("crafted.bin") && e.contains("C = 1073741824"), "{e}");
    // Sane width, absurd padded vocabulary: the exact size is computed without wrapping and compared.
    std::fs::write(&p, llmc_header([1024, 50257, 12, 12, 768, i32::MAX])).unwrap();
    let e = err(checkpoint::load(&p));
    assert!(e.contains("crafted.bin") && e.contains("Vp 2147483647") && e.contains("truncated"), "{e}");
    std::fs::write(&p, llmc_header([1024, 50257, i32::MAX, 12, 768, 50304])).unwrap();
    let e = err(checkpoint::load(&p));
    assert!(e.contains("crafted.bin") && e.contains("L = 2147483647"), "{e}");
    let e = refused(&["export", "--checkpoint", &s(&p), "--out", &s(&tmp.path().join("hf"))]);
    assert!(e.contains("crafted.bin") && e.contains("L = 2147483647"), "{e}");
}

// --------------------------------------------------------------------------- D6, D15: nonsense numbers

/// Refused by the flag validation before any file is read (regression tests: these used to panic or run).
#[test]
fn d6_d15_nonsense_numbers_are_refused_naming_the_flag() {
    let sft = ["sft", "--base", "nowhere", "--data", "d.jsonl", "--tokenizer", "t.json"];
    let reward = ["reward", "--base", "nowhere", "--data", "d.jsonl", "--tokenizer", "t.json"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        ([&sft[..], &["--batch", "0"]].concat(), "--batch must be at least 1 (got 0)"),
        ([&sft[..], &["--epochs", "0"]].concat(), "--epochs must be a positive finite number (got 0)"),
        ([&sft[..], &["--epochs", "nan"]].concat(), "--epochs must be a positive finite number (got NaN)"),
        ([&sft[..], &["--eval-fraction", "2"]].concat(), "--eval-fraction must be in (0, 1) (got 2)"),
        ([&reward[..], &["--epochs=-3"]].concat(), "--epochs must be a positive finite number (got -3)"),
        (
            vec!["sample", "--checkpoint", "c", "--tokenizer", "t", "--temperature", "nan"],
            "--temperature must be a finite number >= 0 (got NaN)",
        ),
        (vec!["bench", "--batch", "0"], "--batch must be at least 1 (got 0)"),
    ];
    for (args, want) in cases {
        let out = refused(&args);
        assert!(out.contains(want), "rlhf {}: {out}", args.join(" "));
    }
}

// ------------------------------------------------------------------------------ D8: prepared data

/// A stray extra shard used to be read as more training data.
#[test]
fn d8_a_stray_shard_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    prepared(&data, 0.1, 1);
    let vocab = Meta::load(&data).unwrap().vocab_size;
    assert!(Dataset::open(&data, "train", vocab).is_ok());
    std::fs::copy(data.join("val_000.bin"), data.join("train_001.bin")).unwrap();
    let e = err(Dataset::open(&data, "train", vocab));
    assert!(e.contains("train_001.bin") && e.contains("not listed in") && e.contains("meta.json"), "{e}");
    std::fs::remove_file(data.join("train_001.bin")).unwrap();
    // A shard listed in meta.json that is gone.
    std::fs::remove_file(data.join("val_000.bin")).unwrap();
    let e = err(Dataset::open(&data, "val", vocab));
    assert!(e.contains("val_000.bin") && e.contains("missing"), "{e}");
}

/// A `prepare` killed while moving shards into place left old and new splits mixed, used silently
/// (validation documents leaked into train). Simulated: one shard of another run moved in.
#[test]
fn d8_splits_of_two_prepare_runs_are_never_mixed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    prepared(&a, 0.1, 1);
    prepared(&b, 0.1, 2);
    let vocab = Meta::load(&a).unwrap().vocab_size;
    std::fs::copy(b.join("val_000.bin"), a.join("val_000.bin")).unwrap();
    assert!(Dataset::open(&a, "train", vocab).is_ok());
    let e = err(Dataset::open(&a, "val", vocab));
    assert!(e.contains("val_000.bin") && e.contains("is not the shard `prepare` wrote there"), "{e}");
    // Same size, other content: the hash tells them apart.
    let mut bytes = std::fs::read(b.join("train_000.bin")).unwrap();
    let n = bytes.len();
    bytes[n - 2] = if bytes[n - 2] == 5 { 6 } else { 5 };
    bytes[n - 1] = 0;
    std::fs::write(b.join("train_000.bin"), &bytes).unwrap();
    let e = err(Dataset::open(&b, "train", vocab));
    assert!(e.contains("train_000.bin") && e.contains("has hash"), "{e}");
    // The pretraining entry point refuses a directory without its manifest (an install cut short).
    std::fs::remove_file(a.join("meta.json")).unwrap();
    let e = err(rlhf::data::shards::check_data_vocab(&a, vocab));
    assert!(e.contains("has no meta.json") && e.contains("interrupted"), "{e}");
}

/// `meta.json` was never cross-checked against the shards.
#[test]
fn d8_meta_json_is_cross_checked_against_the_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    prepared(&data, 0.1, 1);
    let meta = Meta::load(&data).unwrap();
    assert_eq!(meta.train.manifest.len(), meta.train.shards.len());
    let vocab = meta.vocab_size;
    let good = std::fs::read_to_string(data.join("meta.json")).unwrap();
    edit_json(&data.join("meta.json"), |v| {
        let t = v["train"]["tokens"].as_u64().unwrap();
        v["train"]["tokens"] = serde_json::json!(t + 1);
    });
    let e = err(Dataset::open(&data, "train", vocab));
    assert!(e.contains("meta.json") && e.contains("train.tokens"), "{e}");
    // An older meta.json without the per-shard records: the token total is still checked.
    std::fs::write(data.join("meta.json"), &good).unwrap();
    edit_json(&data.join("meta.json"), |v| {
        v["train"].as_object_mut().unwrap().remove("manifest");
        let t = v["train"]["tokens"].as_u64().unwrap();
        v["train"]["tokens"] = serde_json::json!(t + 1);
    });
    let e = err(Dataset::open(&data, "train", vocab));
    assert!(e.contains("hold") && e.contains("tokens but it records"), "{e}");
    std::fs::write(data.join("meta.json"), &good).unwrap();
    edit_json(&data.join("meta.json"), |v| v["eot"] = serde_json::json!(100_000));
    assert!(err(Meta::load(&data)).contains("eot is 100000"));
}

// ---------------------------------------------------------------------- D9: tokenizer / data mismatch

/// `pretrain --init` of a 512-vocab model on 300-id data used to train.
#[test]
fn d9_pretrain_init_refuses_data_of_another_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    prepared(&data, 0.1, 1);
    let ck = tmp.path().join("ck512");
    saved_checkpoint(&ck, 512);
    let init = s(&ck);
    let extra = ["--init", &init, "--batch", "1", "--seq", "8", "--eval-batches", "1", "--eval-every", "1"];
    let out = refused_pretrain(&data, &tmp.path().join("run"), &extra);
    assert!(out.contains("meta.json") && out.contains("300 ids") && out.contains("512"), "{out}");
    assert!(!tmp.path().join("run").join("latest").exists());
}

/// `export --tokenizer` with a tokenizer of another vocabulary used to be accepted.
#[test]
fn d9_export_refuses_a_tokenizer_of_another_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck512");
    saved_checkpoint(&ck, 512);
    let hf = tmp.path().join("hf");
    let e = err(checkpoint::export::export(&ck, &hf, &TokenizerArgs::path(tokenizer_path())));
    assert!(e.contains("tokenizer.json") && e.contains("300") && e.contains("512"), "{e}");
    assert!(!hf.exists(), "a refused export left {}", hf.display());
    // The matching size is accepted.
    let ck300 = tmp.path().join("ck300");
    saved_checkpoint(&ck300, 300);
    let r = checkpoint::export::export(&ck300, &hf, &TokenizerArgs::path(tokenizer_path())).unwrap();
    assert_eq!(r.tokenizer, Some(hf.join("tokenizer.json")));
}

// ------------------------------------------------------------------------------------- D13: export

/// `export --checkpoint RUN` (a run folder, as `sample` accepts) used to fail.
#[test]
fn d13_export_accepts_a_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let ck = saved_checkpoint(&run.join("step-000003"), 300);
    std::fs::write(run.join("latest"), "step-000003").unwrap();
    let hf = tmp.path().join("hf");
    checkpoint::export::export(&run, &hf, &TokenizerArgs::default()).unwrap();
    assert_eq!(checkpoint::load(&hf).unwrap(), ck);
    // Exporting again over it (no tokenizer this time) replaces the files and leaves no stale tokenizer.
    checkpoint::export::export(&run, &hf, &TokenizerArgs::path(tokenizer_path())).unwrap();
    assert!(hf.join("tokenizer.json").is_file());
    checkpoint::export::export(&run, &hf, &TokenizerArgs::default()).unwrap();
    assert!(!hf.join("tokenizer.json").exists() && hf.join("model.safetensors").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Writes one NaN into `tensor` of the model file in `dir` (bypassing every writer's checks).
fn poison(dir: &Path, tensor: &str) {
    let path = dir.join("model.safetensors");
    let st = checkpoint::safetensors::SafeTensors::open(&path).unwrap();
    let e = st.get(tensor).unwrap_or_else(|| panic!("no {tensor}"));
    let begin = e.begin;
    drop(st);
    let mut bytes = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = 8 + header + begin + 4 * 5;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
}

/// Exporting a NaN model said "does not read back identical" and left files.
#[test]
fn d13_export_of_a_nan_model_names_the_tensor_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("nan");
    saved_checkpoint(&ck, 300);
    poison(&ck, "transformer.h.0.mlp.c_fc.weight");
    let hf = tmp.path().join("hf");
    let e = err(checkpoint::export::export(&ck, &hf, &TokenizerArgs::default()));
    assert!(e.contains("h.0.mlp.c_fc.weight") && (e.contains("non-finite") || e.contains("NaN")), "{e}");
    assert!(!e.contains("does not read back identical"), "{e}");
    assert!(!hf.exists(), "a refused export left {}", hf.display());
}

/// A bad `--tokenizer` left a partial export.
#[test]
fn d13_a_failed_export_leaves_no_partial_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    saved_checkpoint(&ck, 300);
    let bad = tmp.path().join("bad-tokenizer.json");
    std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
    let hf = tmp.path().join("hf");
    let e = err(checkpoint::export::export(&ck, &hf, &TokenizerArgs::path(&bad)));
    assert!(e.contains("bad-tokenizer.json"), "{e}");
    assert!(!hf.exists(), "a failed export left {}", hf.display());
    let e = err(checkpoint::export::export(&ck, &hf, &TokenizerArgs::path(tmp.path().join("absent.json"))));
    assert!(e.contains("absent.json"), "{e}");
    assert!(!hf.exists());
    // An existing export is left as it was.
    checkpoint::export::export(&ck, &hf, &TokenizerArgs::path(tokenizer_path())).unwrap();
    let before = std::fs::read(hf.join("tokenizer.json")).unwrap();
    assert!(checkpoint::export::export(&ck, &hf, &TokenizerArgs::path(&bad)).is_err());
    assert_eq!(std::fs::read(hf.join("tokenizer.json")).unwrap(), before);
}

// ------------------------------------------------------------------------------------ D14: SFT JSONL

fn jsonl(dir: &Path, name: &str, lines: &[&[u8]]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join(&b"\n"[..])).unwrap();
    p
}

const GOOD: &[u8] = br#"{"prompt": "Hello", "completion": "Hi there."}"#;
const GOOD_CHAT: &[u8] =
    br#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#;

/// Errors for an unknown role or a conversation opening with the assistant named no file or line and
/// ignored `--skip-bad`.
#[test]
fn d14_bad_conversations_name_the_file_and_line_and_honour_skip_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let role = jsonl(
        tmp.path(),
        "roles.jsonl",
        &[
            GOOD,
            br#"{"messages": [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}]}"#,
            GOOD_CHAT,
        ],
    );
    let e = err(rlhf::data::jsonl::read_sft(&role, false));
    assert!(e.contains("roles.jsonl:2:") && e.contains("narrator"), "{e}");
    let r = rlhf::data::jsonl::read_sft(&role, true).unwrap();
    assert_eq!((r.records.len(), r.skipped), (2, 1));

    let opens = jsonl(
        tmp.path(),
        "opens.jsonl",
        &[
            GOOD,
            GOOD_CHAT,
            br#"{"messages": [{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Ok"}]}"#,
        ],
    );
    let e = err(rlhf::data::jsonl::read_sft(&opens, false));
    assert!(e.contains("opens.jsonl:3:") && e.contains("opens with the assistant"), "{e}");
    let r = rlhf::data::jsonl::read_sft(&opens, true).unwrap();
    assert_eq!((r.records.len(), r.skipped), (2, 1));
}

/// One non-UTF-8 byte used to reject the whole file without a line number.
#[test]
fn d14_a_non_utf8_byte_is_reported_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = jsonl(tmp.path(), "latin1.jsonl", &[GOOD, b"{\"prompt\": \"caf\xe9\", \"completion\": \"ok\"}", GOOD_CHAT]);
    let e = err(rlhf::data::jsonl::read_sft(&p, false));
    assert!(e.contains("latin1.jsonl:2:") && e.contains("UTF-8") && e.contains("0xe9"), "{e}");
    let r = rlhf::data::jsonl::read_sft(&p, true).unwrap();
    assert_eq!((r.records.len(), r.skipped), (2, 1));
    let e = err(rlhf::data::jsonl::read_prompts(&p, false));
    assert!(e.contains("latin1.jsonl:2:"), "{e}");
    // Windows line ends still read.
    let crlf = jsonl(tmp.path(), "crlf.jsonl", &[b"{\"prompt\": \"a\", \"completion\": \"b\"}\r", GOOD]);
    assert_eq!(rlhf::data::jsonl::read_sft(&crlf, false).unwrap().records.len(), 2);
}

// -------------------------------------------------------------------------------- D16: messages

/// `prepare --val-fraction 0` then `pretrain` used to say "run prepare first".
#[test]
fn d16_an_empty_validation_split_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("tokens");
    prepared(&data, 0.0, 1);
    let out = refused_pretrain(&data, &tmp.path().join("run"), &[]);
    assert!(out.contains("val split") && out.contains("is empty") && out.contains("--val-fraction 0"), "{out}");
    assert!(!out.contains("run `prepare` first"), "{out}");
    // `--steps 0` is refused by the flag validation, naming the flag (it used to say "no checkpoint was
    // written").
    let out = refused(&["pretrain", "--data", &s(&data), "--out", &s(&tmp.path().join("run")), "--steps", "0"]);
    assert!(out.contains("--steps must be at least 1 (got 0)"), "{out}");
}

/// `score` called a wrong-typed prompt "missing".
#[test]
fn d16_score_says_a_wrong_typed_field_is_not_a_string() {
    let tmp = tempfile::tempdir().unwrap();
    let d = jsonl(
        tmp.path(),
        "score.jsonl",
        &[br#"{"prompt": "a", "completion": "b"}"#, br#"{"prompt": 5, "completion": "b"}"#],
    );
    let args = ["score", "--reward", "nowhere", "--tokenizer", &s(tokenizer_path()), "--data", &s(&d)];
    let out = refused(&args);
    assert!(out.contains("score.jsonl:2:") && out.contains("\"prompt\" is 5, not a string"), "{out}");
    assert!(!out.contains("missing"), "{out}");
    std::fs::write(&d, r#"{"prompt": "a", "answer": ["b"]}"#).unwrap();
    let out = refused(&args);
    assert!(out.contains("score.jsonl:1:") && out.contains("\"answer\" is [\"b\"], not a string"), "{out}");
    std::fs::write(&d, r#"{"prompt": "a"}"#).unwrap();
    let out = refused(&args);
    assert!(out.contains("missing \"completion\" (or \"answer\")"), "{out}");
}

/// `latest` could point outside the run folder.
#[test]
fn d16_latest_must_name_a_checkpoint_inside_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    saved_checkpoint(&tmp.path().join("elsewhere/step-000001"), 300);
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("step-000001")).unwrap();
    let outside = s(&tmp.path().join("elsewhere/step-000001"));
    for name in ["../elsewhere/step-000001", outside.as_str(), "step-000001/..", "step-1", "."] {
        std::fs::write(run.join("latest"), name).unwrap();
        let e = err(checkpoint::run_dir::resolve_checkpoint(&run));
        assert!(e.contains("not a checkpoint of this run") && e.contains("latest"), "{name}: {e}");
    }
    std::fs::write(run.join("latest"), "step-000001\n").unwrap();
    assert_eq!(checkpoint::run_dir::resolve_checkpoint(&run).unwrap(), run.join("step-000001"));
    std::fs::write(run.join("latest"), "step-1234567").unwrap();
    assert!(err(checkpoint::run_dir::resolve_checkpoint(&run)).contains("does not exist"));
}
