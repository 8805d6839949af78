//! A judge command's stdout, as `rlhf label`, `ppo` and `eval` read it (rlhf::judge::parse_scores): UTF-8,
//! one line per item, each a number or {"score": number}. The first byte gives the number of items expected.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

fuzz_target!(init: rlhf_fuzz::init("judge_output"), |data: &[u8]| {
    let Some((&items, out)) = data.split_first() else { return };
    let _ = rlhf::judge::parse_scores(out, items as usize);
});
