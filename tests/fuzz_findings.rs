//! Inputs the fuzz targets (fuzz/) found to crash a loader, each now a one-line error naming the file.

use rlhf::tokenizer::Tokenizer;

const CHAT_TOKENIZER: &str = include_str!("fixtures/hf_chat/model/tokenizer.json");

/// A JSON syntax error inside the "decoder" object panicked in the tokenizers library (an `expect` in its
/// decoder deserializer) instead of being an error.
#[test]
fn tokenizer_with_a_syntax_error_in_its_decoder_is_an_error() {
    assert!(CHAT_TOKENIZER.contains("\"decoder\": {"), "fixture changed");
    let at = CHAT_TOKENIZER.find("\"decoder\": {").unwrap();
    let (head, tail) = CHAT_TOKENIZER.split_at(at);
    let broken = format!("{head}{}", tail.replacen("\"add_prefix_space\"", ")add_prefix_space\"", 1));
    let e = Tokenizer::from_json(broken.as_bytes(), "bad/tokenizer.json").expect_err("a broken tokenizer.json loaded");
    let e = format!("{e:#}");
    assert!(e.contains("bad/tokenizer.json is not valid JSON") && e.contains("line"), "{e}");
}

/// The same with a byte that is not UTF-8 in a key of the "decoder" object (a check that skips strings
/// without decoding them lets it through to the tokenizers library, which panics).
#[test]
fn tokenizer_with_a_non_utf8_key_in_its_decoder_is_an_error() {
    let at = CHAT_TOKENIZER.find("\"decoder\": {").expect("fixture changed");
    let (head, tail) = CHAT_TOKENIZER.split_at(at);
    let tail = tail.replacen("\"add_prefix_space\"", "\"add_prefix_sp\u{1}\"", 1);
    let mut broken = format!("{head}{tail}").into_bytes();
    let i = broken.iter().position(|&b| b == 1).unwrap();
    broken[i] = 0xAD;
    let e =
        Tokenizer::from_json(&broken, "bad/tokenizer.json").expect_err("a tokenizer.json with a non-UTF-8 key loaded");
    let e = format!("{e:#}");
    assert!(e.contains("bad/tokenizer.json is not valid JSON"), "{e}");
}
