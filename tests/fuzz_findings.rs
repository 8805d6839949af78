//! Inputs the fuzz targets (fuzz/) found to crash a loader, each now a one-line error naming the file.

use rlhf::tokenizer::Tokenizer;

const CHAT_TOKENIZER: &str = include_str!("fixtures/hf_chat/model/tokenizer.json");

/// The fixture tokenizer with the first `"add_prefix_space"` of its "decoder" object replaced by `key`.
fn decoder_key_replaced(key: &[u8]) -> Vec<u8> {
    let at = CHAT_TOKENIZER.find("\"decoder\": {").expect("fixture changed");
    let (head, tail) = CHAT_TOKENIZER.as_bytes().split_at(at);
    let old = b"\"add_prefix_space\"";
    let i = tail.windows(old.len()).position(|w| w == old).expect("fixture changed");
    [head, &tail[..i], key, &tail[i + old.len()..]].concat()
}

fn load_error(json: &[u8]) -> String {
    let e = Tokenizer::from_json(json, "bad/tokenizer.json").expect_err("a broken tokenizer.json loaded");
    format!("{e:#}")
}

/// A JSON syntax error inside the "decoder" object panicked in the tokenizers library (an `expect` in its
/// decoder deserializer) instead of being an error.
#[test]
fn tokenizer_with_a_syntax_error_in_its_decoder_is_an_error() {
    let e = load_error(&decoder_key_replaced(b")add_prefix_space\""));
    assert!(e.contains("bad/tokenizer.json is not valid JSON") && e.contains("line"), "{e}");
}

/// The same with a byte that is not UTF-8 in a key of the "decoder" object (a check that skips strings
/// without decoding them lets it through to the tokenizers library, which panics).
#[test]
fn tokenizer_with_a_non_utf8_key_in_its_decoder_is_an_error() {
    let e = load_error(&decoder_key_replaced(b"\"add_prefix_sp\xAD\""));
    assert!(e.contains("bad/tokenizer.json is not valid JSON"), "{e}");
}
