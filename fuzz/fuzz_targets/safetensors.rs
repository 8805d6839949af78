//! model.safetensors: the header parser and every tensor read as f32, then the whole model loader with a
//! valid config.json beside it (shapes checked against the config).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

const CONFIG: &[u8] = include_bytes!("../../tests/fixtures/parity/l2_h2_c32_v97_t16/config.json");

fuzz_target!(init: rlhf_fuzz::init("safetensors"), |data: &[u8]| {
    let label = std::path::Path::new("fuzz.safetensors");
    if let Ok(st) = rlhf::checkpoint::safetensors::SafeTensors::from_bytes(data.to_vec(), label) {
        for e in st.entries() {
            let _ = st.read_entry_f32(e);
        }
    }
    rlhf_fuzz::put("config.json", CONFIG);
    rlhf_fuzz::put("model.safetensors", data);
    let _ = rlhf::checkpoint::load(rlhf_fuzz::scratch());
});
