//! An exported chat model in Hugging Face `transformers` (fixtures from `tools/make-parity-fixtures.sh
//! chat`, committed under tests/fixtures/hf_chat/): `tokenizer.apply_chat_template` gives the ids of the
//! engine's chat encoder, and `GPT2ForSequenceClassification` scores a right-padded batch of answers of
//! different lengths as `rlhf score` does, up to the reward head's `score.bias`, which that class has no
//! place for (it loads the rest and ignores the bias, so its scores are ours minus that constant).
//!
//! The fixture's model folder is an `rlhf export`; the test first checks that an export made now writes
//! the same chat template, special tokens and ids, so the fixture cannot silently go stale.

use rlhf::backend::Cpu;
use rlhf::checkpoint::tokenizer::{recorded, TokenizerArgs};
use rlhf::data::chat::{self, ChatFormat, Message};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_chat")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn expected() -> Value {
    json(&fixture_dir().join("expected.json"))
}

/// The committed export is what `rlhf export` writes today: same tokenizer files and ids, same chat template.
#[test]
fn the_fixture_is_what_export_writes_now() {
    let model = fixture_dir().join("model");
    let tmp = tempfile::tempdir().unwrap();
    let again = tmp.path().join("again");
    let r = rlhf::checkpoint::export::export(&model, &again, &TokenizerArgs::default()).unwrap();
    assert!(r.chat_template);
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        assert_eq!(
            std::fs::read(model.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name} of a fresh export differs from the fixture's: regenerate it (tools/make-parity-fixtures.sh chat)"
        );
    }
    let tc = json(&model.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], chat::CHAT_TEMPLATE);
    let tok = recorded(&model).unwrap().expect("the export records its tokenizer");
    let ct = ChatFormat::from_tokenizer(tok.tokenizer()).unwrap();
    let cfg = json(&model.join("config.json"));
    assert_eq!(cfg["pad_token_id"].as_u64(), Some(ct.pad as u64));
    assert_eq!(cfg["eos_token_id"].as_u64(), Some(ct.end as u64));
    assert_eq!(expected()["pad_token_id"].as_u64(), Some(ct.pad as u64));
}

/// `apply_chat_template` (with and without `add_generation_prompt`) in transformers = the chat encoder.
#[test]
fn apply_chat_template_gives_the_chat_encoders_ids() {
    let tf = recorded(&fixture_dir().join("model")).unwrap().unwrap();
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok).unwrap();
    let convs = expected()["conversations"].as_array().unwrap().clone();
    assert!(convs.len() >= 3);
    for c in &convs {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone()).unwrap();
        let (prompt, answer) = chat::encode_messages(tok, &ct, &messages).unwrap();
        let whole: Vec<u32> = prompt.iter().chain(&answer).copied().collect();
        assert_eq!(whole, ids(&c["ids"]), "the conversation {:?} (rendered {})", messages, c["text"]);
        assert_eq!(prompt, ids(&c["prompt_ids"]), "the generation prompt of {messages:?}");
        assert_eq!(answer.last(), Some(&ct.end));
        // The first turn alone with the generation prompt: what sampling gives the model.
        let first = chat::encode_prompt(tok, &ct, &messages[0].content).unwrap();
        assert_eq!(first, ids(&c["first_prompt_ids"]), "the prompt {:?}", messages[0].content);
    }
}

/// transformers' scores of a right-padded batch = `rlhf score`'s minus `score.bias`.
#[test]
fn a_padded_batch_scores_in_transformers_as_rlhf_score_does() {
    let exp = expected();
    let model = fixture_dir().join("model");
    let tf = recorded(&model).unwrap().unwrap();
    let tok = tf.tokenizer();
    let ct = ChatFormat::from_tokenizer(tok).unwrap();
    let be = Cpu::<f32>::new();
    let rm = rlhf::pipeline::reward::load(&be, &model).unwrap();
    let bias = exp["score_bias"].as_f64().unwrap();
    assert!(bias.abs() > 0.1, "the fixture's score.bias is {bias}: the offset would not be seen");
    let answers = exp["answers"].as_array().unwrap();
    let lengths: Vec<usize> = answers.iter().map(|a| ids(&a["ids"]).len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "answers of one length: nothing is padded");
    // The batch transformers scored is right-padded with <|pad|>, each row ending in <|end|> before it.
    for (row, n) in exp["padded_input_ids"].as_array().unwrap().iter().zip(&lengths) {
        let row = ids(row);
        assert_eq!(row[*n - 1], ct.end);
        assert!(row[*n..].iter().all(|&t| t == ct.pad));
    }
    let mut pairs = vec![];
    for a in answers {
        let p = chat::encode_prompt(tok, &ct, a["prompt"].as_str().unwrap()).unwrap();
        let ans = chat::encode_answer(tok, &ct, a["completion"].as_str().unwrap()).unwrap();
        assert_eq!([p.as_slice(), ans.as_slice()].concat(), ids(&a["ids"]));
        pairs.push((p, ans));
    }
    let ours = rlhf::pipeline::reward::score_all(&be, &rm, &pairs, ct.pad, pairs.len()).unwrap();
    let hf: Vec<f64> = answers.iter().map(|a| a["hf_score"].as_f64().unwrap()).collect();
    let diff = ours.iter().zip(&hf).map(|(o, h)| (o - bias - h).abs()).fold(0.0, f64::max);
    println!("rlhf scores {ours:?}\ntransformers {hf:?} (+ score.bias {bias})\nmax |diff| {diff:.3e}");
    assert!(diff <= 1e-4, "rlhf score - score.bias differs from transformers by {diff:.3e}");
    // Scored one at a time in transformers, the same (padding changes nothing).
    let alone: Vec<f64> =
        exp["hf_scores_one_at_a_time"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(alone.iter().zip(&hf).all(|(a, h)| (a - h).abs() <= 1e-5), "{alone:?} vs {hf:?}");
    // Different answers get clearly different scores, so the comparison can fail.
    let spread = hf.iter().fold(f64::MIN, |m, &x| m.max(x)) - hf.iter().fold(f64::MAX, |m, &x| m.min(x));
    assert!(spread > 100.0 * diff.max(1e-6), "scores barely differ: {hf:?}");
}

/// The same through the command: `rlhf score` on the export (no `--tokenizer`: the export records it).
#[test]
fn rlhf_score_on_the_export_matches_transformers() {
    let exp = expected();
    let dir = fixture_dir();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["score", "--reward", &dir.join("model").display().to_string()])
        .args(["--data", &dir.join("answers.jsonl").display().to_string(), "--device", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Vec<f64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["score"].as_f64().unwrap())
        .collect();
    let bias = exp["score_bias"].as_f64().unwrap();
    let hf: Vec<f64> = exp["answers"].as_array().unwrap().iter().map(|a| a["hf_score"].as_f64().unwrap()).collect();
    assert_eq!(ours.len(), hf.len());
    for (o, h) in ours.iter().zip(&hf) {
        assert!((o - bias - h).abs() <= 1e-4, "rlhf score {o} - score.bias {bias} vs transformers {h}");
    }
}
