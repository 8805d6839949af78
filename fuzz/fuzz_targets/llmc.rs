//! llm.c model files (header of 256 int32, then f32 or bf16 parameters), through the loader that
//! dispatches on the magic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

fuzz_target!(init: rlhf_fuzz::init("llmc"), |data: &[u8]| {
    let path = rlhf_fuzz::put("model.bin", data);
    let _ = rlhf::checkpoint::llmc::load(&path);
    let _ = rlhf::checkpoint::load(&path);
});
