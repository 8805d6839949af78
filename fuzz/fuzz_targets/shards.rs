//! A prepared data folder: meta.json and a token shard (the input is both, split by rlhf_fuzz::split2; the
//! shard is written as train_000.bin and val_000.bin). The shard is opened directly, and the folder through
//! meta.json (its manifest cross-checked against the shards), then read as a training stream.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: rlhf_fuzz::Bounded = rlhf_fuzz::Bounded;

use rlhf::data::shards::{check_data_vocab, Dataset, Meta, Shard};

fuzz_target!(init: rlhf_fuzz::init("shards"), |data: &[u8]| {
    let Some((meta, shard)) = rlhf_fuzz::split2(data) else { return };
    rlhf_fuzz::put("meta.json", meta);
    let train = rlhf_fuzz::put("train_000.bin", shard);
    rlhf_fuzz::put("val_000.bin", shard);
    if let Ok(s) = Shard::open(&train, 512) {
        let _ = s.tokens(0..s.len().min(256));
    }
    let dir = rlhf_fuzz::scratch();
    let _ = check_data_vocab(dir, 512);
    if let Ok(meta) = Meta::load(dir) {
        for split in ["train", "val"] {
            if let Ok(ds) = Dataset::open(dir, split, meta.vocab_size) {
                let _ = ds.tokens(0..ds.len().min(256));
                let _ = ds.batch(1, 0, 2, 8);
                let _ = ds.eval_batches(2, 8, 2);
            }
        }
    }
});
