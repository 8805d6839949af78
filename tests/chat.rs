//! `rlhf chat` driven through a pipe on a tiny random checkpoint, and the incremental decoder it runs on
//! against full forward passes.

use rlhf::backend::{Backend, Cpu};
use rlhf::checkpoint::{self, Checkpoint, ModelKind};
use rlhf::model::sample::{Conversation, SampleConfig};
use rlhf::model::{Acts, Config, Decoder};
use rlhf::tokenizer::{Tokenizer, TokenizerFile, SPECIAL_TOKENS};
use rlhf::util::rng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tokenizer trained on the first 20 kB of the corpus and a random 2-layer model of context `ctx`, saved
/// as a checkpoint with its tokenizer in `dir/ck`.
fn tiny_checkpoint(dir: &Path, ctx: usize) -> PathBuf {
    let text = rlhf::tokenizer::read_text(Path::new("data/corpus/austen.txt.gz")).unwrap();
    let corpus = dir.join("corpus.txt");
    std::fs::write(&corpus, &text[..20_000]).unwrap();
    let tok = Tokenizer::train(&[corpus], 300, &SPECIAL_TOKENS).unwrap();
    let tok_path = dir.join("tokenizer.json");
    tok.save(&tok_path).unwrap();
    let be = Cpu::<f32>::new();
    let cfg = Config::gpt2(2, 2, 32, tok.vocab_size(), ctx);
    let model = Decoder::init(&be, cfg, 5).unwrap();
    let out = dir.join("ck");
    let ck = Checkpoint::from_model(&be, &model, ModelKind::Policy);
    checkpoint::save(&out, &ck, Some(&TokenizerFile::read(&tok_path).unwrap())).unwrap();
    out
}

/// Run `rlhf chat` on `ck` with `input` piped to stdin (answers of 12 tokens unless `extra` says otherwise);
/// returns (success, stdout, stderr).
fn chat(ck: &Path, input: &str, extra: &[&str]) -> (bool, String, String) {
    let max_new: &[&str] = if extra.contains(&"--max-new-tokens") { &[] } else { &["--max-new-tokens", "12"] };
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["chat", "--checkpoint", ck.to_str().unwrap(), "--device", "cpu"])
        .args(max_new)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rlhf chat");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The answers of a chat on `input` (stdout), asserting it succeeded.
fn answers(ck: &Path, input: &str, extra: &[&str]) -> String {
    let (ok, out, err) = chat(ck, input, extra);
    assert!(ok, "rlhf chat failed on {input:?}:\n{err}");
    out
}

#[test]
fn two_turns_answer_deterministically_and_reset_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path(), 256);
    let one = answers(&ck, "Good morning.\n", &["--seed", "7"]);
    let two = answers(&ck, "Good morning.\nHow is your sister?\n", &["--seed", "7"]);
    assert!(!one.trim().is_empty(), "no answer to the first turn");
    // Streaming the first answer does not depend on what comes later; the second turn adds its answer.
    assert!(two.starts_with(&one) && two.len() > one.len(), "first turn {one:?}, two turns {two:?}");
    assert_eq!(two, answers(&ck, "Good morning.\nHow is your sister?\n", &["--seed", "7"]), "same seed, other answers");
    assert_ne!(two, answers(&ck, "Good morning.\nHow is your sister?\n", &["--seed", "8"]), "the seed is ignored");
    // /reset: the next answer is a fresh chat's first answer; /help, empty lines and /quit end nothing else.
    let reset = answers(
        &ck,
        "Good morning.\nHow is your sister?\n/reset\n\n/help\nGood morning.\n/quit\nignored\n",
        &["--seed", "7"],
    );
    assert_eq!(reset, format!("{two}{one}"));
}

#[test]
fn a_full_context_drops_the_oldest_turns_and_a_too_long_turn_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ck = tiny_checkpoint(dir.path(), 48);
    let lines: String = (0..8).map(|i| format!("Tell me about the ball number {i}.\n")).collect();
    let (ok, out, err) = chat(&ck, &lines, &[]);
    assert!(ok, "{err}");
    assert!(err.contains("context full: dropped the"), "no turn was dropped:\n{err}");
    assert!(!out.trim().is_empty());
    // A turn longer than the context is refused on its own; the chat goes on as if it had not been typed.
    let long = "word ".repeat(100);
    let (ok, out, err) = chat(&ck, &format!("{long}\nGood morning.\n"), &[]);
    assert!(ok, "{err}");
    assert!(err.contains("error: this message is") && err.contains("context of 48 tokens"), "{err}");
    assert_eq!(out, answers(&ck, "Good morning.\n", &[]));
    // Answers that alone fill the context are refused up front, naming the flag.
    let (ok, _, err) = chat(&ck, "Hello\n", &["--max-new-tokens", "46"]);
    assert!(!ok && err.contains("--max-new-tokens 46 leaves no room"), "{err}");
}

/// Next-token logits of `tokens` by one forward pass over all of them (no cache).
fn full_logits<B: Backend>(be: &B, m: &Decoder<B>, tokens: &[u32]) -> Vec<f32> {
    let mut a = Acts::new(be, &m.cfg, 1, tokens.len()).unwrap();
    m.forward(be, &mut a, tokens, None, None).unwrap();
    m.logits_at(be, &a, &[tokens.len() - 1]).unwrap().remove(0)
}

/// The cache carried across turns gives the logits of a full forward over the whole conversation (f64,
/// so the two orders of summation agree to 1e-9).
#[test]
fn incremental_decoding_across_turns_matches_a_full_forward() {
    let be = Cpu::<f64>::new();
    let cfg = Config::gpt2(2, 2, 16, 37, 40);
    let m = Decoder::init(&be, cfg, 3).unwrap();
    let sc = SampleConfig { max_new_tokens: 5, temperature: 1.0, top_k: 0, top_p: 1.0, stop: Some(4) };
    let mut dec = Conversation::new(&be, &m).unwrap();
    let mut rng = Rng::new(1);
    for turn in [vec![2, 10, 11, 12, 3], vec![4, 2, 20, 3], vec![2, 30, 31, 32, 33, 3]] {
        let before = dec.tokens().len();
        let g = dec.answer(&be, &turn, &sc, &mut rng, |_| Ok(())).unwrap();
        assert_eq!(dec.tokens().len(), before + turn.len() + g.tokens.len());
        // Each answer token's log-probability, as the full forward over everything before it gives it.
        for (k, (&t, &lp)) in g.tokens.iter().zip(&g.logprobs).enumerate() {
            let logits = full_logits(&be, &m, &dec.tokens()[..before + turn.len() + k]);
            let lse = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
            assert!((lp as f64 - (logits[t as usize] as f64 - lse)).abs() < 1e-5, "turn token {k}");
        }
    }
    // The next feed (the last answer's final token and a new turn) against one forward over all of it.
    let cached = dec.feed(&be, &[2, 5, 6, 3]).unwrap();
    let full = full_logits(&be, &m, dec.tokens());
    let err = cached.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-6, "cached and full-forward logits differ by {err}");
    // After a reset the conversation starts again at position 0.
    dec.reset();
    assert_eq!(dec.feed(&be, &[2, 5, 6, 3]).unwrap(), full_logits(&be, &m, &[2, 5, 6, 3]));
}
