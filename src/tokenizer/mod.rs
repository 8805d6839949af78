//! Text <-> token ids, through a Hugging Face `tokenizer.json`.
//!
//! [`Tokenizer`] wraps any tokenizer in the Hugging Face `tokenizers` JSON format (for example GPT-2's),
//! and [`Tokenizer::train`] builds our own: a byte-level BPE in the GPT-2 style. Byte-level means every
//! UTF-8 byte has a token of its own (256 base symbols), the GPT-2 regular expression splits text into
//! words, numbers, punctuation and whitespace runs before merging, and the decoder maps the byte symbols
//! back, so `decode(encode(x)) == x` for any text (no unknown tokens, no lost whitespace or newlines).
//!
//! Special tokens ([`SPECIAL_TOKENS`] by default) get the first ids `0..k` and are recognised as single
//! tokens wherever they appear in the text given to [`Tokenizer::encode`]:
//!
//! | id | token             | use                                            |
//! |----|-------------------|------------------------------------------------|
//! | 0  | `<\|endoftext\|>` | end of a document / document separator (EOS)   |
//! | 1  | `<\|pad\|>`       | padding, distinct from EOS so EOS can be learnt |
//! | 2  | `<\|user\|>`      | start of a user turn in a chat                 |
//! | 3  | `<\|assistant\|>` | start of the assistant's turn                  |
//! | 4  | `<\|end\|>`       | end of an answer                               |
//!
//! The model's embedding table needs [`Tokenizer::vocab_size`] rows (largest id + 1, added tokens
//! included); [`check_vocab`] turns a mismatch into a clear error. [`TokenizerFile`] is a tokenizer with
//! the bytes and SHA-256 of its file, as it is stored with token folders and checkpoints.

pub mod file;
pub mod gpt2;
pub mod stream;

pub use file::{TokenizerFile, TOKENIZER_FILE};

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// The special tokens our tokenizers are trained with, in id order (see the module docs).
pub const SPECIAL_TOKENS: [&str; 5] = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|end|>"];

/// The end-of-text token: separates documents and ends generations.
pub const EOT: &str = "<|endoftext|>";

/// The names a tokenizer's end-of-text token goes by, in the order they are looked for: ours and GPT-2's
/// (also SmolLM2's and Qwen2.5's), Llama 3's, and SentencePiece's (Mistral, TinyLlama).
pub const EOT_TOKENS: [&str; 3] = [EOT, "<|end_of_text|>", "</s>"];

/// A loaded or trained tokenizer; cheap queries, lossless for byte-level BPE.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    eot: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size).field("eot", &self.eot).finish()
    }
}

/// Reads a `.txt` or `.txt.gz` (gzip) file as UTF-8; an error names the file when it is missing,
/// unreadable, not UTF-8 or empty (only whitespace counts as empty).
pub fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open input file {}", path.display()))?;
    let mut bytes = Vec::new();
    let is_gz = path.extension().is_some_and(|e| e == "gz");
    if is_gz {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot decompress gzip input file {}", path.display()))?;
    } else {
        std::io::BufReader::new(file)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read input file {}", path.display()))?;
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow!(
            "input file {} is not valid UTF-8 (first bad byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        bail!("input file {} is empty", path.display());
    }
    Ok(text)
}

/// Text the tokenizer must reproduce exactly for it to be accepted at load.
const PROBE: &str = "Hello, world!\n\n  \"Über\" naïve café — 日本語 🙂\ttabs\r\nend<|endoftext|>";

impl Tokenizer {
    fn from_inner(mut inner: tokenizers::Tokenizer, what: &str) -> Result<Self> {
        let (eot_name, eot) = EOT_TOKENS.into_iter().find_map(|t| Some((t, inner.token_to_id(t)?))).ok_or_else(|| {
            anyhow!("{what}: the tokenizer has none of the end-of-text tokens {EOT_TOKENS:?} (needed to separate documents)")
        })?;
        // A tokenizer whose model vocabulary has the end-of-text token but does not declare it as an added
        // token would split the literal text into pieces; mark it special (same id) so it is one token in text.
        if !inner.get_added_tokens_decoder().contains_key(&eot) {
            inner.add_special_tokens(&[AddedToken::from(eot_name.to_string(), true)]);
        }
        let vocab = inner.get_vocab(true);
        let max_id =
            vocab.values().copied().max().ok_or_else(|| anyhow!("{what}: the tokenizer has an empty vocabulary"))?;
        if max_id as usize >= crate::model::Config::MAX_VOCAB {
            bail!(
                "{what}: the tokenizer has an id {max_id}, beyond the largest supported vocabulary ({} ids)",
                crate::model::Config::MAX_VOCAB
            );
        }
        let tok = Tokenizer { inner, vocab_size: max_id as usize + 1, eot };
        let ids = tok.try_encode(PROBE).with_context(|| format!("{what}: the tokenizer cannot encode text"))?;
        let back = tok.try_decode(&ids).with_context(|| format!("{what}: the tokenizer cannot decode its own ids"))?;
        if back != PROBE {
            bail!("{what}: the tokenizer is not lossless (decode(encode({PROBE:?})) = {back:?}); a byte-level BPE is needed");
        }
        Ok(tok)
    }

    /// Loads a Hugging Face `tokenizer.json`; it must have an end-of-text token ([`EOT_TOKENS`]) and
    /// round-trip text.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let json = std::fs::read(path).with_context(|| format!("cannot read tokenizer file {}", path.display()))?;
        Self::from_json(&json, &path.display().to_string())
    }

    /// Parses the bytes of a `tokenizer.json`; `what` names its source in errors.
    pub fn from_json(json: &[u8], what: &str) -> Result<Self> {
        // Text to a JSON value first, then the value to a tokenizer: read straight from the text, the
        // tokenizers library panics on a syntax error or a byte that is not UTF-8 inside its "decoder" object
        // instead of returning the error (found by fuzz/fuzz_targets/tokenizer.rs).
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| anyhow!("{what} is not valid JSON: {e}"))?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(value).map_err(|e| anyhow!("{what} is not a valid tokenizer.json: {e}"))?;
        Self::from_inner(inner, what)
    }

    /// Saves as `tokenizer.json` atomically (temporary file in the same directory, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.inner.to_string(true).map_err(|e| anyhow!("cannot serialise the tokenizer: {e}"))?;
        crate::util::fs::write_atomic(path, json.as_bytes())
    }

    /// Trains a GPT-2-style byte-level BPE of `vocab_size` ids (special tokens first, then the 256 byte
    /// symbols, then merges) on `.txt` / `.txt.gz` files.
    pub fn train(files: &[PathBuf], vocab_size: usize, special_tokens: &[&str]) -> Result<Self> {
        if files.is_empty() {
            bail!("no input files to train the tokenizer on");
        }
        let unique: HashSet<&str> = special_tokens.iter().copied().collect();
        if unique.len() != special_tokens.len() {
            bail!("special tokens {special_tokens:?} contain duplicates");
        }
        if !special_tokens.iter().any(|t| EOT_TOKENS.contains(t)) {
            bail!("special tokens {special_tokens:?} must include an end-of-text token (one of {EOT_TOKENS:?})");
        }
        let min = special_tokens.len() + 256;
        if vocab_size < min {
            bail!(
                "vocabulary size {vocab_size} is too small: {} special tokens + 256 byte symbols need at least {min}",
                special_tokens.len()
            );
        }
        let mut texts = Vec::with_capacity(files.len());
        for f in files {
            texts.push(read_text(f)?);
        }
        let specials: Vec<AddedToken> = special_tokens.iter().map(|s| AddedToken::from(s.to_string(), true)).collect();
        let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
        let trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(specials)
            .initial_alphabet(alphabet)
            .build();
        let mut trainer = TrainerWrapper::from(trainer);
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        let byte_level = ByteLevel::default().add_prefix_space(false).trim_offsets(false);
        inner.with_pre_tokenizer(Some(byte_level));
        inner.with_decoder(Some(ByteLevelDecoder::default().add_prefix_space(false).trim_offsets(false)));
        inner.with_post_processor(Some(byte_level));
        // Feed paragraphs (with their trailing blank lines) so the counting runs in parallel.
        let pieces = texts.iter().flat_map(|t| t.split_inclusive("\n\n"));
        inner.train(&mut trainer, pieces).map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
        let tok = Self::from_inner(inner, "trained tokenizer")?;
        for (i, s) in special_tokens.iter().enumerate() {
            if tok.token_id(s) != Some(i as u32) {
                bail!("trained tokenizer: special token {s} got id {:?}, expected {i}", tok.token_id(s));
            }
        }
        Ok(tok)
    }

    /// Token ids of `text`, special tokens recognised (infallible for byte-level BPE, checked at load).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self.try_encode(text) {
            Ok(ids) => ids,
            // Unreachable for tokenizers that passed the round-trip check at load.
            Err(e) => panic!("tokenizer failed to encode text: {e:#}"),
        }
    }

    /// Token ids of `text`, with the tokenizer's own error surfaced.
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| anyhow!("encode failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (special tokens written out; unknown ids are dropped, broken UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        self.try_decode(ids).unwrap_or_else(|_| String::new())
    }

    /// Text of `ids`, with the tokenizer's own error surfaced.
    pub fn try_decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| anyhow!("decode failed: {e}"))
    }

    /// Size of the id space (largest id + 1, added special tokens included): the embedding's row count.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Id of a token string (regular or special), if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id, if it exists.
    pub fn id_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Id of the end-of-text token (`<|endoftext|>`, or another of [`EOT_TOKENS`]).
    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// The end-of-text token's string.
    pub fn eot_token(&self) -> String {
        self.inner.id_to_token(self.eot).expect("the id was looked up by name")
    }

    /// Id of `<|pad|>` if present, otherwise the end-of-text token (GPT-2, SmolLM2, Qwen2.5 and Llama 3 have
    /// no pad token of their own).
    pub fn pad(&self) -> u32 {
        self.token_id("<|pad|>").unwrap_or(self.eot)
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Wraps an already built Hugging Face tokenizer (same checks as [`Tokenizer::load`]).
    pub fn from_hf(inner: tokenizers::Tokenizer) -> Result<Self> {
        Self::from_inner(inner, "tokenizer")
    }
}

/// Errors unless a tokenizer with `tokenizer_vocab` ids is the one for a model with `model_vocab` embedding
/// rows. The sizes must be equal, but for padding: a model may have up to 1/[`VOCAB_PADDING`] of its rows
/// beyond the tokenizer's ids, its table rounded up (Qwen2.5's 151,936 rows for 151,665 ids, 0.18%; those
/// rows are never read). A tokenizer further short of the model is another tokenizer (it would encode with
/// ids the model learnt for other tokens), a larger one would produce ids the model has no row for.
pub fn check_vocab(tokenizer_vocab: usize, model_vocab: usize, what: &str) -> Result<()> {
    if tokenizer_vocab > model_vocab || model_vocab - tokenizer_vocab > model_vocab / VOCAB_PADDING {
        bail!(
            "{what}: the tokenizer has {tokenizer_vocab} ids but the model's vocabulary has {model_vocab}: \
             this is not the tokenizer the model was trained with"
        );
    }
    Ok(())
}

/// A model's embedding may have up to `model_vocab / VOCAB_PADDING` rows of padding ([`check_vocab`]).
pub const VOCAB_PADDING: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_vocab_accepts_only_the_same_size() {
        assert!(check_vocab(100, 100, "m").is_ok());
        assert!(check_vocab(151_665, 151_936, "qwen2.5").is_ok(), "a padded embedding");
        assert!(check_vocab(50_257, 50_304, "gpt-2 padded to 64").is_ok());
        assert!(check_vocab(300, 512, "m").is_err());
        assert!(check_vocab(100, 101, "m").is_err(), "a small table has no room for padding");
        assert!(check_vocab(101, 100, "m").is_err());
        let e = check_vocab(50257, 4096, "model.safetensors").unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("50257") && e.contains("4096"), "{e}");
    }

    #[test]
    fn special_tokens_start_with_eot() {
        assert_eq!(SPECIAL_TOKENS[0], EOT);
    }
}
