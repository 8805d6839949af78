//! tokenizer.json: parsed by the tokenizers crate, then the engine's checks (an end-of-text token, ids in
//! range, lossless round trip), then an encode and decode of text with specials and odd bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

fuzz_target!(init: rlhf_fuzz::init("tokenizer"), |data: &[u8]| {
    if let Ok(tok) = rlhf::tokenizer::Tokenizer::from_json(data, "fuzz tokenizer.json") {
        if let Ok(ids) = tok.try_encode("<|user|>It is a truth\u{0}\u{feff} universally<|end|><|endoftext|>") {
            let _ = tok.try_decode(&ids);
        }
        let _ = tok.try_decode(&[0, 1, u32::MAX, tok.vocab_size() as u32]);
    }
});
