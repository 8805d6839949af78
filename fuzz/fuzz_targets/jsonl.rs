//! Every JSONL shape: the first byte picks the reader (SFT prompt/completion or messages, ranked answers,
//! prompts, held-out prompts) and whether bad lines are skipped; the rest is the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

use rlhf::data::jsonl;

fuzz_target!(init: rlhf_fuzz::init("jsonl"), |data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else { return };
    let path = rlhf_fuzz::put("data.jsonl", text);
    let skip_bad = pick & 4 != 0;
    let _ = match pick % 4 {
        0 => jsonl::read_sft(&path, skip_bad).map(|_| ()),
        1 => jsonl::read_ranked(&path, skip_bad).map(|r| r.records.iter().for_each(|k| drop(k.pairs()))),
        2 => jsonl::read_prompts(&path, skip_bad).map(|_| ()),
        _ => jsonl::read_heldout(&path, skip_bad).map(|_| ()),
    };
});
