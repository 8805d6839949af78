//! config.json of a Hugging Face GPT-2 folder, with a valid model.safetensors beside it: every field a
//! config may hold, sized against the tensors before anything is allocated from it.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

const MODEL: &[u8] = include_bytes!("../../tests/fixtures/parity/l2_h2_c32_v97_t16/model.safetensors");

fuzz_target!(init: rlhf_fuzz::init("hf_config"), |data: &[u8]| {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rlhf_fuzz::put("model.safetensors", MODEL);
    });
    rlhf_fuzz::put("config.json", data);
    let _ = rlhf::checkpoint::load(rlhf_fuzz::scratch());
});
