//! The tokenizer travels with every checkpoint (issue 17): `prepare` copies it into the token folder,
//! every training command stores it in each checkpoint (`tokenizer.json`, its SHA-256 in `config.json`),
//! and every command that reads a checkpoint takes it from there; a different `--tokenizer` is refused
//! naming both files and both hashes (unless `--force-tokenizer`), as are two models trained with
//! different tokenizers; checkpoints that record none still load with `--tokenizer`. All through the
//! binary, on one tiny run (pretrain, SFT, reward model) built once.

use rlhf::tokenizer::file::sha256_hex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn rlhf(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf")).args(args).output().expect("run rlhf");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs `rlhf ARGS` and returns its output, failing the test when it fails.
fn ok(args: &[&str]) -> String {
    let (success, out) = rlhf(args);
    assert!(success, "rlhf {} failed:\n{out}", args.join(" "));
    out
}

/// Runs `rlhf ARGS`, which must fail; returns its output.
fn refused(args: &[&str]) -> String {
    let (success, out) = rlhf(args);
    assert!(!success, "rlhf {} was accepted:\n{out}", args.join(" "));
    out
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The run every test reads: a tokenizer, its token folder, and pretrain -> SFT -> reward runs (tiny preset,
/// a few steps each), none given a `--tokenizer` after `prepare`.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The tokenizer file `prepare` was given.
    tok: PathBuf,
    sha: String,
}

impl Fixture {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn d(&self, rel: &str) -> String {
        s(&self.p(rel))
    }
    /// The latest checkpoint folder of a run.
    fn latest(&self, run: &str) -> PathBuf {
        let name = std::fs::read_to_string(self.p(run).join("latest")).unwrap();
        self.p(run).join(name.trim())
    }
    /// A copy of the tokenizer with other bytes (the same tokens and ids, written compactly): another file,
    /// another SHA-256.
    fn reformatted_tokenizer(&self, name: &str) -> PathBuf {
        let v = json(&self.tok);
        let path = self.p(name);
        if !path.exists() {
            std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        }
        path
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let d = |p: &str| s(&root.join(p));
        let text = rlhf::tokenizer::read_text(Path::new("data/corpus/austen.txt.gz")).unwrap();
        std::fs::write(root.join("corpus.txt"), &text[..20_000]).unwrap();
        ok(&["tokenizer", "train", "--input", &d("corpus.txt"), "--vocab-size", "300", "--out", &d("tok.json")]);
        ok(&["prepare", "--tokenizer", &d("tok.json"), "--input", &d("corpus.txt"), "--out", &d("tokens")]);
        let cpu = ["--device", "cpu"];
        let pre = ["pretrain", "--data", &d("tokens"), "--out", &d("pre"), "--steps", "2", "--batch", "2"];
        ok(&[&pre[..], &["--seq", "32", "--eval-every", "2", "--eval-batches", "1"], &cpu].concat());
        let demos: String = ["a truth", "a single man", "good fortune", "a wife", "universally", "in want"]
            .iter()
            .map(|p| format!("{{\"prompt\": \"{p}\", \"completion\": \"Mr. Darcy said {p}.\"}}\n"))
            .collect();
        std::fs::write(root.join("demos.jsonl"), demos).unwrap();
        let sft = ["sft", "--base", &d("pre"), "--data", &d("demos.jsonl"), "--out", &d("sft"), "--epochs", "1"];
        ok(&[&sft[..], &["--batch", "2", "--eval-every", "1"], &cpu].concat());
        let ranked: String = (0..6)
            .map(|i| format!("{{\"prompt\": \"q {i}\", \"chosen\": \"a happy answer {i}\", \"rejected\": \"no\"}}\n"))
            .collect();
        std::fs::write(root.join("ranked.jsonl"), ranked).unwrap();
        let rw = ["reward", "--base", &d("sft"), "--data", &d("ranked.jsonl"), "--sft-data", &d("demos.jsonl")];
        ok(&[&rw[..], &["--out", &d("rm"), "--prompts-per-step", "2"], &cpu].concat());
        let prompts: String =
            ["a truth", "good fortune"].iter().map(|p| format!("{{\"prompt\": \"{p}\"}}\n")).collect();
        std::fs::write(root.join("prompts.jsonl"), prompts).unwrap();
        let tok = root.join("tok.json");
        let sha = sha256_hex(&std::fs::read(&tok).unwrap());
        Fixture { _dir: dir, root, tok, sha }
    })
}

/// `dir` holds the fixture's tokenizer, byte for byte, and its config.json records it.
fn assert_carries_tokenizer(f: &Fixture, dir: &Path) {
    let stored = std::fs::read(dir.join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{} has no tokenizer.json: {e}", dir.display()));
    assert_eq!(stored, std::fs::read(&f.tok).unwrap(), "{}: another tokenizer.json", dir.display());
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["rlhf"]["tokenizer"]["file"], "tokenizer.json", "{}", dir.display());
    assert_eq!(cfg["rlhf"]["tokenizer"]["sha256"], f.sha.as_str(), "{}", dir.display());
}

#[test]
fn prepare_and_every_training_run_store_the_tokenizer() {
    let f = fixture();
    assert_eq!(std::fs::read(f.p("tokens/tokenizer.json")).unwrap(), std::fs::read(&f.tok).unwrap());
    assert_eq!(json(&f.p("tokens/meta.json"))["tokenizer_sha256"], f.sha.as_str());
    for run in ["pre", "sft", "rm"] {
        let steps: Vec<PathBuf> = std::fs::read_dir(f.p(run))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("step-"))
            .collect();
        assert!(!steps.is_empty(), "{run} wrote no checkpoint");
        for step in steps {
            assert_carries_tokenizer(f, &step);
        }
    }
}

/// Every command that reads a checkpoint works without `--tokenizer`; PPO's checkpoints (policy and value
/// model) and an export carry the tokenizer on.
#[test]
fn every_reading_command_takes_the_tokenizer_from_the_checkpoint() {
    let f = fixture();
    let cpu = ["--device", "cpu"];
    let tmp = tempfile::tempdir().unwrap();
    let t = |p: &str| s(&tmp.path().join(p));
    ok(&[&["sample", "--checkpoint", &f.d("pre"), "--prompt", "It was", "--max-new-tokens", "3"][..], &cpu].concat());
    let label = ["label", "--policy", &f.d("sft"), "--prompts", &f.d("prompts.jsonl"), "-k", "2"];
    ok(&[&label[..], &["--judge", "lexicon", "--max-new-tokens", "3", "--out", &t("labels.jsonl")], &cpu].concat());
    assert_eq!(std::fs::read_to_string(tmp.path().join("labels.jsonl")).unwrap().lines().count(), 2);
    let pairs =
        "{\"prompt\": \"a truth\", \"completion\": \"yes\"}\n{\"prompt\": \"a wife\", \"completion\": \"no, never\"}\n";
    std::fs::write(tmp.path().join("pairs.jsonl"), pairs).unwrap();
    let scored = ok(&[&["score", "--reward", &f.d("rm"), "--data", &t("pairs.jsonl")][..], &cpu].concat());
    assert_eq!(scored.lines().filter(|l| l.contains("\"score\"")).count(), 2, "{scored}");
    let ppo_out = t("ppo");
    let ppo = |iterations: &str, extra: &[&str]| {
        let base = ["ppo", "--policy", &f.d("sft"), "--reward", &f.d("rm"), "--prompts", &f.d("prompts.jsonl")];
        let small =
            ["--batch", "2", "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "3", "--device", "cpu"];
        ok(&[&base[..], &small, &["--iterations", iterations, "--out", &ppo_out], extra].concat())
    };
    ppo("1", &[]);
    let step = tmp.path().join("ppo/step-000001");
    assert_carries_tokenizer(f, &step);
    assert_carries_tokenizer(f, &step.join("value"));
    let eval = ["eval", "--policy", &t("ppo"), "--sft", &f.d("sft"), "--reward", &f.d("rm"), "--base", &f.d("pre")];
    let small = ["--samples", "1", "--best-of", "1", "--max-new-tokens", "3", "--judge", "lexicon"];
    ok(&[&eval[..], &["--prompts", &f.d("prompts.jsonl")], &small, &cpu].concat());
    ok(&["export", "--checkpoint", &t("ppo"), "--out", &t("ppo-hf")]);
    assert_carries_tokenizer(f, &tmp.path().join("ppo-hf"));
    // The resumed PPO run (one more iteration) keeps it.
    ppo("2", &["--resume"]);
    assert_carries_tokenizer(f, &tmp.path().join("ppo/step-000002"));
}

/// A `--tokenizer` that is not the recorded one is refused naming both files and both hashes; with
/// `--force-tokenizer` it is used, with a warning naming both.
#[test]
fn a_different_tokenizer_is_refused_unless_forced() {
    let f = fixture();
    let other = f.reformatted_tokenizer("other-tok.json");
    let other_sha = sha256_hex(&std::fs::read(&other).unwrap());
    assert_ne!(other_sha, f.sha);
    let stored = f.latest("sft").join("tokenizer.json");
    let base = ["sample", "--checkpoint", &f.d("sft"), "--max-new-tokens", "2", "--device", "cpu"];
    let out = refused(&[&base[..], &["--tokenizer", &s(&other)]].concat());
    for want in [s(&other), other_sha.clone(), s(&stored), f.sha.clone(), "--force-tokenizer".into()] {
        assert!(out.contains(&want), "the refusal does not name {want}:\n{out}");
    }
    let out = ok(&[&base[..], &["--tokenizer", &s(&other), "--force-tokenizer"]].concat());
    assert!(out.contains("WARNING") && out.contains(&other_sha) && out.contains(&f.sha), "{out}");
    // The very file it records is accepted as it is, and so is the original one `prepare` was given.
    ok(&[&base[..], &["--tokenizer", &s(&stored)]].concat());
    ok(&[&base[..], &["--tokenizer", &s(&f.tok)]].concat());
    // --force-tokenizer alone means nothing.
    let out = refused(&[&base[..], &["--force-tokenizer"]].concat());
    assert!(out.contains("--tokenizer"), "{out}");
    // A training command refuses it the same way, before training.
    let tmp = tempfile::tempdir().unwrap();
    let sft = ["sft", "--base", &f.d("pre"), "--data", &f.d("demos.jsonl"), "--tokenizer", &s(&other)];
    let out = refused(&[&sft[..], &["--out", &s(&tmp.path().join("sft")), "--device", "cpu"]].concat());
    assert!(out.contains(&other_sha) && out.contains(&f.sha) && out.contains("--base"), "{out}");
    assert!(!tmp.path().join("sft/latest").exists());
}

/// A copy of `src` (a checkpoint folder) in `dst` whose stored tokenizer is `tok` (recorded as such), as
/// if it had been trained with that one.
fn with_tokenizer(src: &Path, dst: &Path, tok: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for name in ["model.safetensors", "config.json"] {
        std::fs::copy(src.join(name), dst.join(name)).unwrap();
    }
    let bytes = std::fs::read(tok).unwrap();
    std::fs::write(dst.join("tokenizer.json"), &bytes).unwrap();
    let mut cfg = json(&dst.join("config.json"));
    cfg["rlhf"]["tokenizer"]["sha256"] = sha256_hex(&bytes).into();
    std::fs::write(dst.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

#[test]
fn two_checkpoints_with_different_tokenizers_are_refused_naming_both() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let rm2 = tmp.path().join("rm2");
    with_tokenizer(&f.latest("rm"), &rm2, &f.reformatted_tokenizer("other-tok.json"));
    let ppo = ["ppo", "--policy", &f.d("sft"), "--reward", &s(&rm2), "--prompts", &f.d("prompts.jsonl")];
    let out = refused(&[&ppo[..], &["--out", &s(&tmp.path().join("ppo")), "--device", "cpu"]].concat());
    assert!(
        out.contains(&format!("--policy {}", f.d("sft"))) && out.contains(&format!("--reward {}", s(&rm2))),
        "{out}"
    );
    assert!(out.contains("must share one tokenizer"), "{out}");
    let eval = ["eval", "--policy", &f.d("sft"), "--sft", &f.d("sft"), "--reward", &s(&rm2)];
    let out = refused(&[&eval[..], &["--prompts", &f.d("prompts.jsonl"), "--device", "cpu"]].concat());
    assert!(out.contains("--reward") && out.contains("must share one tokenizer"), "{out}");
}

/// A checkpoint written before tokenizers were stored (no tokenizer.json, no record) still loads with
/// `--tokenizer`, and without one the error says to pass it; a stored tokenizer changed afterwards is
/// caught by its hash.
#[test]
fn old_checkpoints_need_the_tokenizer_flag_and_a_changed_one_is_caught() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    let src = f.latest("sft");
    std::fs::copy(src.join("model.safetensors"), old.join("model.safetensors")).unwrap();
    let mut cfg = json(&src.join("config.json"));
    cfg["rlhf"].as_object_mut().unwrap().remove("tokenizer");
    std::fs::write(old.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    let base = ["sample", "--checkpoint", &s(&old), "--max-new-tokens", "2", "--device", "cpu"];
    let out = refused(&base);
    assert!(out.contains("no tokenizer is stored") && out.contains(&s(&old)) && out.contains("--tokenizer"), "{out}");
    ok(&[&base[..], &["--tokenizer", &s(&f.tok)]].concat());
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(&pairs, "{\"prompt\": \"a truth\", \"completion\": \"yes\"}\n").unwrap();
    let out = refused(&["score", "--reward", &s(&old), "--data", &s(&pairs), "--device", "cpu"]);
    assert!(out.contains("--tokenizer"), "{out}");
    // An old checkpoint and a new one: the new one's tokenizer is used.
    let prompts = f.d("prompts.jsonl");
    let ppo = ["ppo", "--policy", &s(&old), "--reward", &f.d("rm"), "--prompts", &prompts, "--iterations", "1"];
    let small = ["--batch", "2", "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "2", "--device", "cpu"];
    ok(&[&ppo[..], &small, &["--out", &s(&tmp.path().join("ppo"))]].concat());
    assert_carries_tokenizer(f, &tmp.path().join("ppo/step-000001"));

    // A stored tokenizer.json edited after the checkpoint was written.
    let changed = tmp.path().join("changed");
    with_tokenizer(&src, &changed, &f.tok);
    std::fs::write(changed.join("tokenizer.json"), serde_json::to_string(&json(&f.tok)).unwrap()).unwrap();
    let out = refused(&["sample", "--checkpoint", &s(&changed), "--device", "cpu"]);
    assert!(out.contains("changed after the checkpoint was written") && out.contains(&f.sha), "{out}");
}

/// `rlhf export` of a run folder: the stored tokenizer, `tokenizer_config.json` with the chat template and
/// the chat format's special tokens, and their ids in `config.json`; the export reads back as a reward model
/// that records its tokenizer and scores as the run does.
#[test]
fn export_of_a_run_folder_writes_the_tokenizer_and_the_chat_template() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("hf");
    let out = ok(&["export", "--checkpoint", &f.d("rm"), "--out", &s(&hf)]);
    assert!(out.contains("chat template"), "{out}");
    assert_carries_tokenizer(f, &hf);
    let tok = rlhf::tokenizer::Tokenizer::load(&f.tok).unwrap();
    let (pad, end) = (tok.token_id("<|pad|>").unwrap(), tok.token_id("<|end|>").unwrap());
    let cfg = json(&hf.join("config.json"));
    assert_eq!(cfg["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!((cfg["pad_token_id"].as_u64(), cfg["eos_token_id"].as_u64()), (Some(pad as u64), Some(end as u64)));
    assert_eq!(cfg["bos_token_id"].as_u64(), Some(tok.eot() as u64));
    let tc = json(&hf.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], rlhf::data::chat::CHAT_TEMPLATE);
    assert_eq!((tc["pad_token"].as_str(), tc["eos_token"].as_str()), (Some("<|pad|>"), Some("<|end|>")));
    let sm = json(&hf.join("special_tokens_map.json"));
    assert_eq!((sm["pad_token"].as_str(), sm["eos_token"].as_str()), (Some("<|pad|>"), Some("<|end|>")));
    // The export is a checkpoint that records its tokenizer: it scores without --tokenizer, as the run does.
    let pairs = tmp.path().join("pairs.jsonl");
    std::fs::write(&pairs, "{\"prompt\": \"a truth\", \"completion\": \"yes\"}\n{\"prompt\": \"x\", \"completion\": \"a longer answer here\"}\n").unwrap();
    let score = |m: &str| ok(&["score", "--reward", m, "--data", &s(&pairs), "--device", "cpu"]);
    assert_eq!(score(&s(&hf)), score(&f.d("rm")));
}

/// SFT from a Hugging Face GPT-2-style folder whose own tokenizer.json counts as its recorded one: a
/// `--tokenizer` that extends it with the chat tokens is accepted (the embedding grows) and stored; an
/// unrelated one is refused naming both.
#[test]
fn sft_accepts_a_tokenizer_that_extends_the_base_models_own() {
    use rlhf::checkpoint::{self, Checkpoint, ModelKind};
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    // A base "GPT-2" folder: a tokenizer with only <|endoftext|> as special token, and a model of its size.
    let base_tok = rlhf::tokenizer::Tokenizer::train(&[f.p("corpus.txt")], 280, &["<|endoftext|>"]).unwrap();
    let hf = tmp.path().join("hf-base");
    let cfg = rlhf::model::Config::gpt2(1, 2, 16, base_tok.vocab_size(), 64);
    let be = rlhf::backend::Cpu::<f32>::new();
    let m = rlhf::model::Decoder::init(&be, cfg, 3).unwrap();
    checkpoint::save(&hf, &Checkpoint::from_model(&be, &m, ModelKind::Policy), None).unwrap();
    base_tok.save(hf.join("tokenizer.json")).unwrap();
    // Its chat variant: the same tokenizer with the four chat tokens appended, as `tokenizer gpt2 --chat` does.
    let mut inner = base_tok.inner().clone();
    let chat: Vec<tokenizers::AddedToken> =
        rlhf::tokenizer::SPECIAL_TOKENS[1..].iter().map(|t| tokenizers::AddedToken::from(*t, true)).collect();
    inner.add_special_tokens(&chat);
    let chat_tok = tmp.path().join("chat.json");
    std::fs::write(&chat_tok, inner.to_string(true).unwrap()).unwrap();
    let sft = ["sft", "--base", &s(&hf), "--data", &f.d("demos.jsonl"), "--epochs", "1", "--batch", "2"];
    let out =
        ok(&[&sft[..], &["--tokenizer", &s(&chat_tok), "--out", &s(&tmp.path().join("sft")), "--device", "cpu"]]
            .concat());
    assert!(out.contains("extends the tokenizer of --base"), "{out}");
    let name = std::fs::read_to_string(tmp.path().join("sft/latest")).unwrap();
    let ck = tmp.path().join("sft").join(name.trim());
    assert_eq!(std::fs::read(ck.join("tokenizer.json")).unwrap(), std::fs::read(&chat_tok).unwrap());
    assert_eq!(checkpoint::load(&ck).unwrap().config.vocab_size, base_tok.vocab_size() + 4);
    // The fixture's own chat tokenizer does not extend the folder's: refused, naming both.
    let out = refused(
        &[&sft[..], &["--tokenizer", &s(&f.tok), "--out", &s(&tmp.path().join("sft2")), "--device", "cpu"]].concat(),
    );
    assert!(out.contains(&s(&hf.join("tokenizer.json"))) && out.contains(&f.sha), "{out}");
    // Without --tokenizer the folder's own tokenizer is used, and it has no chat tokens.
    let out = refused(&[&sft[..], &["--out", &s(&tmp.path().join("sft3")), "--device", "cpu"]].concat());
    assert!(out.contains("<|user|>"), "{out}");
}

/// A token folder from before `prepare` copied the tokenizer: `pretrain` needs `--tokenizer` (and stores it);
/// a folder whose copy was changed is caught by the hash in meta.json.
#[test]
fn an_old_token_folder_needs_the_tokenizer_flag() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("tokens");
    std::fs::create_dir_all(&old).unwrap();
    for e in std::fs::read_dir(f.p("tokens")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, old.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(old.join("tokenizer.json"), serde_json::to_string(&json(&f.tok)).unwrap()).unwrap();
    let pre = ["pretrain", "--data", &s(&old), "--steps", "1", "--batch", "1", "--seq", "8", "--eval-batches", "1"];
    let out = refused(&[&pre[..], &["--out", &s(&tmp.path().join("a")), "--device", "cpu"]].concat());
    assert!(out.contains("changed after `rlhf prepare` wrote it") && out.contains(&f.sha), "{out}");
    std::fs::remove_file(old.join("tokenizer.json")).unwrap();
    let mut meta = json(&old.join("meta.json"));
    meta.as_object_mut().unwrap().remove("tokenizer_sha256");
    std::fs::write(old.join("meta.json"), serde_json::to_string_pretty(&meta).unwrap()).unwrap();
    let out = refused(&[&pre[..], &["--out", &s(&tmp.path().join("b")), "--device", "cpu"]].concat());
    assert!(out.contains("no tokenizer is stored with --data") && out.contains("--tokenizer"), "{out}");
    ok(&[&pre[..], &["--tokenizer", &s(&f.tok), "--out", &s(&tmp.path().join("c")), "--device", "cpu"]].concat());
    assert_carries_tokenizer(f, &tmp.path().join("c/step-000001"));
}
