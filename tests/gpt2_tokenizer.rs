//! GPT-2's tokenizer, built offline, against ids recorded by `transformers` (tests/fixtures).

use serde_json::Value;

fn cases() -> Vec<(String, Vec<u32>)> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2_tokenizer_ids.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let cases: Vec<(String, Vec<u32>)> = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect();
    assert!(cases.len() >= 15, "fixture has only {} texts", cases.len());
    cases
}

#[test]
fn encodes_like_gpt2() {
    let tok = rlhf::tokenizer::gpt2::build().unwrap();
    assert_eq!(tok.get_vocab_size(true), 50257);
    let mut saw_eot = false;
    for (text, want) in cases() {
        let enc = tok.encode(text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), &want[..], "text {text:?}");
        saw_eot |= want.contains(&50256);
        // Decoding gives the text back (byte-level BPE is lossless).
        assert_eq!(tok.decode(&want, false).unwrap(), text, "decode of {text:?}");
    }
    assert!(saw_eot, "the fixture must exercise <|endoftext|>");
}

#[test]
fn written_tokenizer_json_encodes_the_same() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tokenizer.json");
    rlhf::cli::gpt2_tokenizer::run(&rlhf::cli::gpt2_tokenizer::Gpt2TokenizerArgs { out: p.clone(), chat: false })
        .unwrap();
    let tok = tokenizers::Tokenizer::from_file(&p).unwrap();
    for (text, want) in cases() {
        assert_eq!(tok.encode(text.as_str(), false).unwrap().get_ids(), &want[..], "text {text:?}");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["pre_tokenizer"]["type"], "ByteLevel");
    assert_eq!(v["pre_tokenizer"]["add_prefix_space"], false);
    assert_eq!(v["added_tokens"][0]["content"], "<|endoftext|>");
    assert_eq!(v["added_tokens"][0]["id"], 50256);
    assert_eq!(v["added_tokens"][0]["special"], true);
}

/// GPT-2 with the chat tokens appended: GPT-2's own ids unchanged, the four chat tokens at 50257..50260.
#[test]
fn gpt2_chat_tokenizer_appends_the_chat_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, chat) = (dir.path().join("plain.json"), dir.path().join("chat.json"));
    rlhf::tokenizer::gpt2::write_tokenizer_json(&plain, false).unwrap();
    rlhf::tokenizer::gpt2::write_tokenizer_json(&chat, true).unwrap();
    let (plain, chat) =
        (rlhf::tokenizer::Tokenizer::load(&plain).unwrap(), rlhf::tokenizer::Tokenizer::load(&chat).unwrap());
    assert_eq!(chat.vocab_size(), 50261);
    let text = "Hello world, it is a truth universally acknowledged.<|endoftext|>";
    assert_eq!(plain.encode(text), chat.encode(text));
    let ids = chat.encode("<|user|>Hi<|assistant|>Yes<|end|><|pad|>");
    assert_eq!(ids.first(), Some(&50258));
    assert!(ids.contains(&50259) && ids.contains(&50260) && ids.last() == Some(&50257));
    rlhf::data::chat::ChatFormat::from_tokenizer(&chat).unwrap();
}
