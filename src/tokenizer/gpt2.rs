//! GPT-2's byte-level BPE tokenizer, built offline from the vocabulary shipped in `data/gpt2/`.
//!
//! `data/gpt2/encoder.json.gz` (token -> id, 50257 entries) and `data/gpt2/vocab.bpe.gz` (the 50000 merges
//! in priority order) are GPT-2's `vocab.json` / `merges.txt`; see `data/gpt2/SOURCE.md`. They are compiled
//! into the binary, so the tokenizer needs no files at run time.
//!
//! The tokenizer is the one Hugging Face ships for GPT-2: GPT-2's pre-tokenizer regex with byte-level
//! mapping (no prefix space), BPE without unknown token, byte-level decoding, and `<|endoftext|>` (id 50256)
//! as a special token that is matched in the text before BPE.

use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// GPT-2's end-of-text token and its id.
pub const EOT: &str = "<|endoftext|>";
pub const EOT_ID: u32 = 50256;
/// GPT-2's vocabulary size.
pub const VOCAB_SIZE: usize = 50257;

static ENCODER_GZ: &[u8] = include_bytes!("../../data/gpt2/encoder.json.gz");
static MERGES_GZ: &[u8] = include_bytes!("../../data/gpt2/vocab.bpe.gz");

fn gunzip(bytes: &[u8], what: &str) -> Result<String> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut s).with_context(|| format!("cannot decompress {what}"))?;
    Ok(s)
}

/// GPT-2's vocabulary (token string in byte-level alphabet -> id).
pub fn vocab() -> Result<Vocab> {
    let text = gunzip(ENCODER_GZ, "data/gpt2/encoder.json.gz")?;
    let map: std::collections::BTreeMap<String, u32> =
        serde_json::from_str(&text).context("data/gpt2/encoder.json is not a token -> id map")?;
    if map.len() != VOCAB_SIZE {
        bail!("data/gpt2/encoder.json has {} tokens, expected {VOCAB_SIZE}", map.len());
    }
    if map.get(EOT) != Some(&EOT_ID) {
        bail!("data/gpt2/encoder.json does not map {EOT} to {EOT_ID}");
    }
    Ok(map.into_iter().collect())
}

/// GPT-2's merges in priority order.
pub fn merges() -> Result<Vec<(String, String)>> {
    let text = gunzip(MERGES_GZ, "data/gpt2/vocab.bpe.gz")?;
    let mut out = Vec::with_capacity(50000);
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let (a, b) =
            line.split_once(' ').ok_or_else(|| anyhow!("data/gpt2/vocab.bpe line {}: not a merge pair", i + 1))?;
        out.push((a.to_string(), b.to_string()));
    }
    if out.len() != 50000 {
        bail!("data/gpt2/vocab.bpe has {} merges, expected 50000", out.len());
    }
    Ok(out)
}

/// Builds GPT-2's tokenizer in memory.
pub fn build() -> Result<Tokenizer> {
    let bpe = BPE::builder()
        .vocab_and_merges(vocab()?, merges()?)
        .build()
        .map_err(|e| anyhow!("cannot build GPT-2 BPE model: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    tok.with_post_processor(Some(ByteLevel::new(false, false, true)));
    tok.add_special_tokens(&[AddedToken::from(EOT, true)]);
    if tok.token_to_id(EOT) != Some(EOT_ID) {
        bail!("{EOT} did not get id {EOT_ID}");
    }
    Ok(tok)
}

/// GPT-2's tokenizer with the chat format's special tokens appended after `<|endoftext|>`
/// (`<|pad|>`, `<|user|>`, `<|assistant|>`, `<|end|>` = ids 50257..50260): what SFT, the reward model and
/// PPO need to start from a real GPT-2, whose embedding `rlhf sft` grows by those rows.
pub fn build_chat() -> Result<Tokenizer> {
    let mut tok = build()?;
    let added: Vec<AddedToken> =
        crate::tokenizer::SPECIAL_TOKENS[1..].iter().map(|t| AddedToken::from(*t, true)).collect();
    tok.add_special_tokens(&added);
    for (i, t) in crate::tokenizer::SPECIAL_TOKENS[1..].iter().enumerate() {
        if tok.token_to_id(t) != Some(EOT_ID + 1 + i as u32) {
            bail!("{t} did not get id {}", EOT_ID + 1 + i as u32);
        }
    }
    Ok(tok)
}

/// Writes GPT-2's `tokenizer.json` (the Hugging Face format) to `path`, atomically; with `chat`, the
/// variant with the chat tokens ([`build_chat`]).
pub fn write_tokenizer_json(path: &Path, chat: bool) -> Result<()> {
    let tok = if chat { build_chat()? } else { build()? };
    let text = tok.to_string(true).map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
    crate::util::fs::write_atomic(path, text.as_bytes())
}
