//! A tokenizer as it travels with token folders and checkpoints: the exact bytes of its `tokenizer.json`
//! and their SHA-256, which names it.
//!
//! Two tokenizers are the same exactly when their files hash the same: `rlhf prepare` copies the file into
//! the token folder and every training command copies it into each checkpoint it writes, byte for byte, so
//! the hash recorded beside a model (`meta.json`'s `tokenizer_sha256`, `config.json`'s
//! `rlhf.tokenizer.sha256`) identifies the tokenizer the model was trained with. SHA-256 rather than the
//! engine's 64-bit FNV fingerprints: the hash is shown to users and compared across machines and versions,
//! where a standard, collision-resistant digest is what other tools (`sha256sum`) can check too.

use super::Tokenizer;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file name a tokenizer gets in a token folder or a checkpoint folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A loaded `tokenizer.json`: its bytes, their SHA-256, where it was read from, and the tokenizer.
#[derive(Clone, Debug)]
pub struct TokenizerFile {
    bytes: Vec<u8>,
    sha256: String,
    source: PathBuf,
    tokenizer: Tokenizer,
}

impl TokenizerFile {
    /// Reads and loads `path` (the checks of [`Tokenizer::load`]).
    pub fn read(path: &Path) -> Result<TokenizerFile> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
        TokenizerFile::from_bytes(bytes, path)
    }

    /// A tokenizer from the bytes of a `tokenizer.json`; `source` names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, source: &Path) -> Result<TokenizerFile> {
        let tokenizer = Tokenizer::from_json(&bytes, &source.display().to_string())?;
        Ok(TokenizerFile { sha256: sha256_hex(&bytes), bytes, source: source.to_owned(), tokenizer })
    }

    /// The lowercase hex SHA-256 of the file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file's exact bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where it was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// `source (SHA-256 ...)`, as messages name a tokenizer.
    pub fn describe(&self) -> String {
        format!("{} (SHA-256 {})", self.source.display(), self.sha256)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Writes the exact bytes to `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::util::fs::write_atomic(path, &self.bytes)
    }

    /// Whether this tokenizer is `base` with tokens appended: every token of `base` has the same id here,
    /// every further id lies beyond `base`'s, and a probe text encodes to the same ids (the same merges and
    /// pre-tokenizer). GPT-2's tokenizer with the chat tokens (`rlhf tokenizer gpt2 --chat`) extends GPT-2's.
    pub fn extends(&self, base: &TokenizerFile) -> bool {
        let (a, b) = (self.tokenizer.inner(), base.tokenizer.inner());
        let (va, vb) = (a.get_vocab(true), b.get_vocab(true));
        let n = base.tokenizer.vocab_size() as u32;
        self.tokenizer.vocab_size() > base.tokenizer.vocab_size()
            && vb.iter().all(|(t, id)| va.get(t) == Some(id))
            && va.iter().all(|(t, &id)| id >= n || vb.contains_key(t))
            && self.tokenizer.try_encode(super::PROBE).ok() == base.tokenizer.try_encode(super::PROBE).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_inputs() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    fn file_of(tok: tokenizers::Tokenizer, name: &str) -> TokenizerFile {
        TokenizerFile::from_bytes(tok.to_string(false).unwrap().into_bytes(), Path::new(name)).unwrap()
    }

    #[test]
    fn gpt2_with_the_chat_tokens_extends_gpt2_and_not_the_reverse() {
        let plain = file_of(crate::tokenizer::gpt2::build().unwrap(), "gpt2.json");
        let chat = file_of(crate::tokenizer::gpt2::build_chat().unwrap(), "gpt2-chat.json");
        assert_ne!(plain.sha256(), chat.sha256());
        assert!(chat.extends(&plain));
        assert!(!plain.extends(&chat));
        assert!(!chat.extends(&chat), "a tokenizer does not extend itself");
    }
}
