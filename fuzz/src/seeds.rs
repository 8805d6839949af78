//! The seed corpus of every fuzz target: valid files of each format, made from the test fixtures by the
//! engine's own writers, so the fuzzer starts from inputs that reach deep into each loader.

use anyhow::{bail, Result};
use rlhf::checkpoint::{self, llmc};
use rlhf::data::shards::{shard_bytes, Meta, ShardInfo, SplitMeta};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
const PARITY: &str = "parity/l2_h2_c32_v97_t16";
const CHAT: &str = "hf_chat/model";

fn fixture(rel: &str) -> Result<Vec<u8>> {
    Ok(std::fs::read(Path::new(FIXTURES).join(rel))?)
}

/// `target`'s seeds: (name, bytes).
fn seeds(target: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let both = |file: &str| -> Result<Vec<(String, Vec<u8>)>> {
        Ok(vec![
            ("parity".into(), fixture(&format!("{PARITY}/{file}"))?),
            ("chat".into(), fixture(&format!("{CHAT}/{file}"))?),
        ])
    };
    Ok(match target {
        "safetensors" => both("model.safetensors")?,
        "hf_config" => both("config.json")?,
        "llmc" => {
            let ck = checkpoint::load(&Path::new(FIXTURES).join(PARITY))?;
            let path = crate::scratch().join("seed.bin");
            let mut out = vec![];
            for (name, bf16) in [("f32", false), ("bf16", true)] {
                llmc::save(&path, &ck, bf16)?;
                out.push((name.to_string(), std::fs::read(&path)?));
            }
            out
        }
        // A data folder's meta.json and its shard as `prepare` writes them, in split2's layout; the second
        // has ids past 65535 (version-2 shards, 4 bytes a token).
        "shards" => {
            let mut out = vec![];
            for (name, vocab) in [("u16", 512usize), ("u32", 70_000)] {
                let tokens: Vec<u32> = (0..300u32).map(|i| (i * 7919) % vocab as u32).collect();
                let shard = shard_bytes(&tokens, vocab)?;
                let split = |s: &str| SplitMeta {
                    tokens: tokens.len() as u64,
                    documents: 3,
                    shards: vec![format!("{s}_000.bin")],
                    manifest: vec![ShardInfo::of(&format!("{s}_000.bin"), &shard)],
                };
                let meta = Meta {
                    vocab_size: vocab,
                    eot: 0,
                    tokenizer: "tokenizer.json".into(),
                    tokenizer_sha256: None,
                    inputs: vec!["corpus.txt".into()],
                    documents: "paragraphs".into(),
                    val_fraction: 0.1,
                    seed: 1,
                    train: split("train"),
                    val: split("val"),
                };
                out.push((name.to_string(), crate::join2(&serde_json::to_vec_pretty(&meta)?, &shard)));
            }
            out
        }
        "tokenizer" => vec![("chat".into(), fixture(&format!("{CHAT}/tokenizer.json"))?)],
        // The first byte picks the reader (the target's docs).
        "jsonl" => {
            let answers = fixture("hf_chat/answers.jsonl")?;
            let messages = br#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"}, {"role": "assistant", "content": "Emma."}]}
"#;
            let ranked = br#"{"prompt": "It is a truth", "completions": ["universally acknowledged.", "no.", ""], "ranking": [0, 2, 1], "ended": [true, true, true]}
{"prompt": "Emma", "chosen": "Woodhouse, handsome", "rejected": "ok"}
"#;
            let prompts = br#"{"prompt": "It is a truth"}
{"prompt": "Emma", "completion": "Woodhouse"}
"#;
            [
                (0u8, "sft", &answers[..]),
                (4, "messages", &messages[..]),
                (1, "ranked", &ranked[..]),
                (2, "prompts", &prompts[..]),
                (3, "heldout", &prompts[..]),
            ]
            .into_iter()
            .map(|(pick, name, text)| (name.to_string(), [&[pick][..], text].concat()))
            .collect()
        }
        "judge_output" => {
            vec![("mixed".into(), b"\x031.5\n{\"score\": -2, \"parts\": {\"fluency\": 1}}\n-0.25e1\n".to_vec())]
        }
        _ => bail!("no seeds for fuzz target {target}"),
    })
}

/// Writes `target`'s seeds into `dir` (created if missing) as `seed-NAME`.
pub fn write_seeds(target: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in seeds(target)? {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
