//! Token shards on disk and deterministic batches drawn from them.
//!
//! # Shard format
//!
//! The llm.c layout, so shards prepared for GPT-2 elsewhere can be reused:
//!
//! ```text
//! header: 256 x int32, little-endian
//!   [0] magic   20240520
//!   [1] version 1 -> tokens are uint16 (vocabularies of at most 65536 ids)
//!               2 -> tokens are uint32 (our extension, for larger vocabularies)
//!   [2] number of tokens N
//!   [3..256] zero
//! body:   N tokens, little-endian, uint16 (version 1) or uint32 (version 2); nothing after them
//! ```
//!
//! [`write_shard`] picks version 1 whenever the vocabulary fits in 16 bits and version 2 otherwise;
//! [`Shard::open`] reads both. Opening checks the magic, the version, that the file is exactly
//! `1024 + N * width` bytes long and that every token is below the vocabulary size, so a corrupt or
//! mismatched shard fails loudly at open instead of indexing out of the embedding later.
//!
//! # Data sets
//!
//! A prepared data directory holds `train_000.bin, train_001.bin, ...`, `val_000.bin, ...` (at most
//! [`SHARD_TOKENS`] tokens each) and `meta.json` ([`Meta`]). [`Dataset`] treats the sorted shards of one
//! split as one continuous token stream (documents inside it are separated by `<|endoftext|>`).
//!
//! `meta.json` is the directory's manifest: it lists every shard of each split with its token count, size
//! and FNV-1a 64 hash ([`ShardInfo`]), and [`Dataset::open`] refuses a directory whose shards do not match
//! it (a stray extra shard, a missing one, or one from another `prepare`, as an interrupted `prepare` or a
//! hand-copied file would leave), naming the shard. A directory without `meta.json` is read as bare shards
//! (e.g. shards prepared by llm.c), except where the caller needs the manifest ([`check_data_vocab`]).
//! `prepare` also copies the tokenizer into the directory (`tokenizer.json`, its SHA-256 in `meta.json`),
//! so pretraining knows which tokenizer its data was encoded with ([`recorded_tokenizer`]).
//!
//! Training batches are a pure function of `(seed, index)`: [`Dataset::batch`] draws `b` random windows of
//! `t + 1` tokens with `Rng::stream(seed, index)`, so step `k` of a run always sees the same batch and a
//! resumed run is bit-identical without storing any loader state. Validation uses
//! [`Dataset::eval_batches`]: fixed consecutive windows from the start of the split.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::tokenizer::{TokenizerFile, TOKENIZER_FILE};
use crate::util::fs::write_atomic;
use crate::util::rng::Rng;

/// First header word of every shard.
pub const SHARD_MAGIC: i32 = 20240520;
/// Header length in int32 words.
pub const HEADER_WORDS: usize = 256;
/// Header length in bytes.
pub const HEADER_BYTES: usize = HEADER_WORDS * 4;
/// Largest number of tokens written to one shard.
pub const SHARD_TOKENS: usize = 100_000_000;

/// Token width in bytes for a shard `version` (1: uint16, 2: uint32).
fn width_of(version: i32) -> Option<usize> {
    match version {
        1 => Some(2),
        2 => Some(4),
        _ => None,
    }
}

/// Shard version needed for a vocabulary of `vocab_size` ids.
pub fn shard_version(vocab_size: usize) -> i32 {
    if vocab_size <= 1 << 16 {
        1
    } else {
        2
    }
}

/// Encodes `tokens` as shard bytes (header + body); errors on ids >= `vocab_size` or too many tokens.
pub fn shard_bytes(tokens: &[u32], vocab_size: usize) -> Result<Vec<u8>> {
    if tokens.len() > i32::MAX as usize {
        bail!("{} tokens do not fit in one shard (at most {})", tokens.len(), i32::MAX);
    }
    if let Some((pos, &id)) = tokens.iter().enumerate().find(|(_, &id)| id as usize >= vocab_size) {
        bail!("token {id} at position {pos} is outside the vocabulary of {vocab_size} ids");
    }
    let version = shard_version(vocab_size);
    let width = width_of(version).unwrap_or(4);
    let mut out = Vec::with_capacity(HEADER_BYTES + tokens.len() * width);
    let mut header = [0i32; HEADER_WORDS];
    header[0] = SHARD_MAGIC;
    header[1] = version;
    header[2] = tokens.len() as i32;
    for w in header {
        out.extend_from_slice(&w.to_le_bytes());
    }
    if version == 1 {
        for &t in tokens {
            out.extend_from_slice(&(t as u16).to_le_bytes());
        }
    } else {
        for &t in tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    Ok(out)
}

/// FNV-1a, 64 bits, of `bytes`: the shard hash recorded in `meta.json` (a check against mix-ups, not
/// against tampering).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Writes a shard atomically (uint16 tokens when `vocab_size <= 65536`, else version 2 with uint32).
pub fn write_shard(path: impl AsRef<Path>, tokens: &[u32], vocab_size: usize) -> Result<()> {
    let path = path.as_ref();
    let bytes = shard_bytes(tokens, vocab_size).with_context(|| format!("cannot write shard {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// A memory-mapped, validated token shard.
pub struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    width: usize,
    len: usize,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("path", &self.path).field("width", &self.width).field("len", &self.len).finish()
    }
}

impl Shard {
    /// Opens and validates a shard (header, exact length, every id < `vocab_size`).
    pub fn open(path: impl AsRef<Path>, vocab_size: usize) -> Result<Shard> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?;
        let size = file.metadata().with_context(|| format!("cannot stat shard {}", path.display()))?.len() as usize;
        if size < HEADER_BYTES {
            bail!("shard {}: {size} bytes is shorter than the {HEADER_BYTES}-byte header", path.display());
        }
        // SAFETY: the file is opened read-only and shards are written atomically (temp + rename), so the
        // mapped file is not modified while mapped by this program.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map shard {}", path.display()))?;
        let word = |i: usize| i32::from_le_bytes(map[4 * i..4 * i + 4].try_into().unwrap_or([0; 4]));
        let (magic, version, claimed) = (word(0), word(1), word(2));
        if magic != SHARD_MAGIC {
            bail!("shard {}: bad magic {magic} (expected {SHARD_MAGIC}); not a token shard", path.display());
        }
        let width = width_of(version)
            .ok_or_else(|| anyhow!("shard {}: unsupported version {version} (expected 1 or 2)", path.display()))?;
        if claimed < 0 {
            bail!("shard {}: header claims a negative token count {claimed}", path.display());
        }
        let body = size - HEADER_BYTES;
        if !body.is_multiple_of(width) || body / width != claimed as usize {
            bail!(
                "shard {}: header claims {claimed} tokens ({} bytes) but the file holds {body} bytes of tokens ({} tokens)",
                path.display(),
                claimed as usize * width,
                body as f64 / width as f64
            );
        }
        let shard = Shard { path: path.to_path_buf(), map, width, len: claimed as usize };
        if vocab_size < (1usize << (8 * width)) {
            if let Some((pos, id)) = shard.find_out_of_range(vocab_size) {
                bail!(
                    "shard {}: token {id} at position {pos} is outside the vocabulary of {vocab_size} ids \
                     (data prepared with a different tokenizer?)",
                    path.display()
                );
            }
        }
        Ok(shard)
    }

    fn body(&self) -> &[u8] {
        &self.map[HEADER_BYTES..]
    }

    /// Size of the file in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// [`fnv1a64`] of the whole file, as `meta.json` records it.
    pub fn hash(&self) -> String {
        format!("{:016x}", fnv1a64(&self.map))
    }

    fn find_out_of_range(&self, vocab_size: usize) -> Option<(usize, u32)> {
        let body = self.body();
        if self.width == 2 {
            body.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .enumerate()
                .find(|&(_, id)| id as usize >= vocab_size)
        } else {
            body.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .enumerate()
                .find(|&(_, id)| id as usize >= vocab_size)
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the shard holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Path the shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shard format version (1: uint16 tokens, 2: uint32 tokens).
    pub fn version(&self) -> i32 {
        if self.width == 2 {
            1
        } else {
            2
        }
    }

    /// Token `i` (panics if `i >= len()`, like slice indexing).
    pub fn get(&self, i: usize) -> u32 {
        assert!(i < self.len, "token index {i} out of range for shard {} of {} tokens", self.path.display(), self.len);
        let b = &self.body()[i * self.width..(i + 1) * self.width];
        if self.width == 2 {
            u16::from_le_bytes([b[0], b[1]]) as u32
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }

    /// Tokens in `range` (panics if the range exceeds `len()`, like slice indexing).
    pub fn tokens(&self, range: Range<usize>) -> Vec<u32> {
        let mut out = Vec::with_capacity(range.len());
        self.extend_tokens(range, &mut out);
        out
    }

    fn extend_tokens(&self, range: Range<usize>, out: &mut Vec<u32>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "token range {range:?} out of range for shard {} of {} tokens",
            self.path.display(),
            self.len
        );
        let bytes = &self.body()[range.start * self.width..range.end * self.width];
        if self.width == 2 {
            out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32));
        } else {
            out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
    }
}

/// One batch: `b` rows of `t` tokens, row-major; `targets[i]` is the token following `inputs[i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

/// All shards of one split of a prepared data directory, as one continuous token stream.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    split: String,
    vocab_size: usize,
    shards: Vec<Shard>,
    /// `starts[i]` is the global position of shard i's first token; the last entry is the total.
    starts: Vec<usize>,
}

impl Dataset {
    /// Opens every `DIR/{split}_*.bin` shard (sorted by name), validating each against `vocab_size`.
    pub fn open(dir: impl AsRef<Path>, split: &str, vocab_size: usize) -> Result<Dataset> {
        let dir = dir.as_ref();
        if split.is_empty() || split.contains(['/', '\\']) {
            bail!("invalid split name {split:?} (expected e.g. \"train\" or \"val\")");
        }
        let prefix = format!("{split}_");
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read data directory {}", dir.display()))?;
        let mut paths = Vec::new();
        for e in entries {
            let e = e.with_context(|| format!("cannot read data directory {}", dir.display()))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".bin") {
                paths.push(e.path());
            }
        }
        paths.sort();
        let meta_path = dir.join(META_FILE);
        let listed = if meta_path.exists() {
            let meta = Meta::load(dir)?;
            match split {
                "train" => Some((meta.train, meta.val_fraction)),
                "val" => Some((meta.val, meta.val_fraction)),
                _ => None,
            }
        } else {
            None
        };
        if let Some((sm, _)) = &listed {
            let on_disk: Vec<String> =
                paths.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().to_string()).collect();
            if let Some(stray) = on_disk.iter().find(|n| !sm.shards.contains(n)) {
                bail!(
                    "shard {} is not listed in {} (which lists {} {split} shard(s)): a stray file, or left by an \
                     interrupted `prepare`; remove it or run `prepare` again",
                    dir.join(stray).display(),
                    meta_path.display(),
                    sm.shards.len()
                );
            }
            if let Some(missing) = sm.shards.iter().find(|n| !on_disk.contains(n)) {
                bail!(
                    "shard {} listed in {} is missing; run `prepare` again",
                    dir.join(missing).display(),
                    meta_path.display()
                );
            }
        }
        if paths.is_empty() {
            if let Some((_, val_fraction)) = &listed {
                bail!(
                    "the {split} split of {} is empty ({} lists no {split} shards; it was prepared with \
                     --val-fraction {val_fraction}): run `prepare` again so that it has {split} documents{}",
                    dir.display(),
                    meta_path.display(),
                    if split == "val" { " (--val-fraction above 0)" } else { "" }
                );
            }
            bail!("no {split} shards ({split}_*.bin) in {}; run `prepare` first", dir.display());
        }
        let shards = paths.iter().map(|p| Shard::open(p, vocab_size)).collect::<Result<Vec<_>>>()?;
        if let Some((sm, _)) = &listed {
            check_against_manifest(&shards, sm, &meta_path)?;
        }
        let mut starts = Vec::with_capacity(shards.len() + 1);
        let mut total = 0usize;
        for s in &shards {
            starts.push(total);
            total += s.len();
        }
        starts.push(total);
        Ok(Dataset { dir: dir.to_path_buf(), split: split.to_string(), vocab_size, shards, starts })
    }

    /// Total number of tokens in the split.
    pub fn len(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    /// True when the split holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The vocabulary size every token was checked against.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Name of the split ("train", "val").
    pub fn split(&self) -> &str {
        &self.split
    }

    /// Directory the shards were found in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shards, in stream order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Tokens at global positions `range` of the split, across shard boundaries (panics out of range).
    pub fn tokens(&self, range: Range<usize>) -> Vec<u32> {
        let mut out = Vec::with_capacity(range.len());
        self.extend_tokens(range, &mut out);
        out
    }

    fn extend_tokens(&self, range: Range<usize>, out: &mut Vec<u32>) {
        assert!(range.end <= self.len(), "token range {range:?} out of range for {} tokens", self.len());
        // Index of the shard holding range.start (the last shard whose start is <= it).
        let mut i = self.starts.partition_point(|&s| s <= range.start).saturating_sub(1);
        let mut pos = range.start;
        while pos < range.end {
            let (s0, s1) = (self.starts[i], self.starts[i + 1]);
            let end = range.end.min(s1);
            if end > pos {
                self.shards[i].extend_tokens(pos - s0..end - s0, out);
                pos = end;
            }
            i += 1;
        }
    }

    fn check_window(&self, t: usize) -> Result<()> {
        if t == 0 {
            bail!("sequence length must be positive");
        }
        if self.len() < t + 1 {
            bail!(
                "the {} split in {} has {} tokens, fewer than one window of t + 1 = {} tokens",
                self.split,
                self.dir.display(),
                self.len(),
                t + 1
            );
        }
        Ok(())
    }

    /// Training batch number `index`: `b` random windows of `t + 1` tokens chosen by
    /// `Rng::stream(seed, index)` only, so it is a pure function of `(seed, index)`.
    pub fn batch(&self, seed: u64, index: u64, b: usize, t: usize) -> Result<Batch> {
        self.check_window(t)?;
        let mut rng = Rng::stream(seed, index);
        let starts_range = (self.len() - t) as u64; // start in [0, len - t - 1]
        let mut inputs = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let mut window = Vec::with_capacity(t + 1);
        for _ in 0..b {
            let start = rng.below(starts_range) as usize;
            window.clear();
            self.extend_tokens(start..start + t + 1, &mut window);
            inputs.extend_from_slice(&window[..t]);
            targets.extend_from_slice(&window[1..]);
        }
        Ok(Batch { inputs, targets })
    }

    /// Fixed validation batches: consecutive windows starting at 0, t, 2t, ... (each t + 1 tokens long),
    /// grouped `b` per batch, at most `max_batches` batches (only complete batches).
    pub fn eval_batches(&self, b: usize, t: usize, max_batches: usize) -> Result<Vec<Batch>> {
        self.check_window(t)?;
        if b == 0 {
            bail!("batch size must be positive");
        }
        let windows = (self.len() - 1) / t;
        let n = (windows / b).min(max_batches);
        if n == 0 && max_batches > 0 {
            bail!(
                "the {} split in {} has {} tokens, fewer than one evaluation batch of {b} x {t} (+1) tokens",
                self.split,
                self.dir.display(),
                self.len()
            );
        }
        let mut out = Vec::with_capacity(n);
        let mut window = Vec::with_capacity(t + 1);
        for k in 0..n {
            let mut inputs = Vec::with_capacity(b * t);
            let mut targets = Vec::with_capacity(b * t);
            for r in 0..b {
                let start = (k * b + r) * t;
                window.clear();
                self.extend_tokens(start..start + t + 1, &mut window);
                inputs.extend_from_slice(&window[..t]);
                targets.extend_from_slice(&window[1..]);
            }
            out.push(Batch { inputs, targets });
        }
        Ok(out)
    }

    /// Count of each token id over the whole split (length `vocab_size`).
    pub fn token_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.vocab_size];
        for s in &self.shards {
            let body = s.body();
            if s.width == 2 {
                for c in body.chunks_exact(2) {
                    counts[u16::from_le_bytes([c[0], c[1]]) as usize] += 1;
                }
            } else {
                for c in body.chunks_exact(4) {
                    counts[u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize] += 1;
                }
            }
        }
        counts
    }
}

/// Entropy in nats/token of the split's unigram distribution: the loss of the best context-free model,
/// which a trained language model must beat.
pub fn unigram_entropy(ds: &Dataset) -> f64 {
    let counts = ds.token_counts();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let n = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// The checks of a split's shards against its `meta.json` entry (names were matched by the caller).
fn check_against_manifest(shards: &[Shard], sm: &SplitMeta, meta_path: &Path) -> Result<()> {
    let m = meta_path.display();
    for (shard, info) in shards.iter().zip(&sm.manifest) {
        let p = shard.path().display();
        if shard.len() as u64 != info.tokens || shard.file_bytes() != info.bytes {
            bail!(
                "shard {p} holds {} tokens ({} bytes) but {m} records {} tokens ({} bytes): it is not the shard \
                 `prepare` wrote there (an interrupted `prepare`, or a copied file); run `prepare` again",
                shard.len(),
                shard.file_bytes(),
                info.tokens,
                info.bytes
            );
        }
        let hash = shard.hash();
        if hash != info.fnv1a64 {
            bail!(
                "shard {p} has hash {hash} but {m} records {}: it is not the shard `prepare` wrote there (an \
                 interrupted `prepare`, or a copied file); run `prepare` again",
                info.fnv1a64
            );
        }
    }
    let total: u64 = shards.iter().map(|s| s.len() as u64).sum();
    if total != sm.tokens {
        bail!("the shards listed in {m} hold {total} tokens but it records {} for their split", sm.tokens);
    }
    Ok(())
}

/// Name of the manifest file of a prepared data directory.
pub const META_FILE: &str = "meta.json";

/// One shard as `prepare` wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the data directory.
    pub name: String,
    /// Number of tokens.
    pub tokens: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// [`fnv1a64`] of the whole file, 16 lowercase hex digits.
    pub fnv1a64: String,
}

impl ShardInfo {
    /// The record of a shard file's `bytes` (as [`shard_bytes`] made them) named `name`.
    pub fn of(name: &str, bytes: &[u8]) -> ShardInfo {
        let tokens = (bytes.len().saturating_sub(HEADER_BYTES)) as u64;
        let width = bytes.get(4..8).and_then(|w| width_of(i32::from_le_bytes(w.try_into().ok()?))).unwrap_or(2);
        ShardInfo {
            name: name.to_string(),
            tokens: tokens / width as u64,
            bytes: bytes.len() as u64,
            fnv1a64: format!("{:016x}", fnv1a64(bytes)),
        }
    }
}

/// Token and document counts of one split, as recorded in `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitMeta {
    pub tokens: u64,
    pub documents: u64,
    /// The split's shard file names, in stream order.
    pub shards: Vec<String>,
    /// One record per shard, same order as `shards` (absent in data prepared before it was recorded; then
    /// only the names and the token total are checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest: Vec<ShardInfo>,
}

/// `meta.json` of a prepared data directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Size of the tokenizer's id space (largest id + 1).
    pub vocab_size: usize,
    /// Id of `<|endoftext|>`, appended after every document.
    pub eot: u32,
    /// Tokenizer file the data was encoded with (the path given to `prepare`).
    pub tokenizer: String,
    /// SHA-256 of that file, copied into the folder as `tokenizer.json` (absent in data prepared before
    /// tokenizers travelled with the data; see [`recorded_tokenizer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
    /// Input text files, in order.
    pub inputs: Vec<String>,
    /// How the inputs were split into documents.
    pub documents: String,
    /// Fraction of documents assigned to validation.
    pub val_fraction: f64,
    /// Seed of the train/validation assignment.
    pub seed: u64,
    pub train: SplitMeta,
    pub val: SplitMeta,
}

impl Meta {
    /// Reads and checks `DIR/meta.json` ([`Meta::validate`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<Meta> {
        let dir = dir.as_ref();
        let path = dir.join(META_FILE);
        if !path.exists() && dir.is_dir() {
            bail!(
                "{} has no {META_FILE}: it is not a directory written by `rlhf prepare`, or a `prepare` into it \
                 was interrupted; run `prepare` again",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let meta: Meta =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid data meta file", path.display()))?;
        meta.validate().with_context(|| format!("{}", path.display()))?;
        Ok(meta)
    }

    /// Checks the fields against each other and against sane bounds (before anything is sized from them).
    pub fn validate(&self) -> Result<()> {
        let max = crate::model::Config::MAX_VOCAB;
        if self.vocab_size == 0 || self.vocab_size > max {
            bail!("vocab_size is {}, outside the supported range 1..={max}", self.vocab_size);
        }
        if self.eot as usize >= self.vocab_size {
            bail!("eot is {}, outside the vocabulary of {} ids", self.eot, self.vocab_size);
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("val_fraction is {}, outside [0, 1)", self.val_fraction);
        }
        for (split, sm) in [("train", &self.train), ("val", &self.val)] {
            for name in &sm.shards {
                let plain = !name.contains(['/', '\\']) && name.starts_with(&format!("{split}_"));
                if !plain || !name.ends_with(".bin") {
                    bail!("{split}.shards lists {name:?}, not a {split}_NNN.bin file name");
                }
            }
            if sm.shards.is_empty() != (sm.tokens == 0) {
                bail!("{split} has {} tokens but lists {} shard(s)", sm.tokens, sm.shards.len());
            }
            if !sm.manifest.is_empty() {
                let names: Vec<&String> = sm.manifest.iter().map(|i| &i.name).collect();
                if names != sm.shards.iter().collect::<Vec<_>>() {
                    bail!("{split}.manifest names {names:?} but {split}.shards lists {:?}", sm.shards);
                }
                let total: u64 = sm.manifest.iter().map(|i| i.tokens).sum();
                if total != sm.tokens {
                    bail!("{split}.manifest counts {total} tokens but {split}.tokens is {}", sm.tokens);
                }
            }
        }
        Ok(())
    }
}

/// The tokenizer the prepared data in `dir` was encoded with: its `tokenizer.json`, checked against the
/// SHA-256 in `meta.json`; `None` for data prepared before the tokenizer was copied into the folder.
pub fn recorded_tokenizer(dir: &Path) -> Result<Option<TokenizerFile>> {
    let meta = Meta::load(dir)?;
    let Some(want) = meta.tokenizer_sha256 else { return Ok(None) };
    let path = dir.join(TOKENIZER_FILE);
    let tf = TokenizerFile::read(&path)
        .with_context(|| format!("{} records a tokenizer (SHA-256 {want})", dir.join(META_FILE).display()))?;
    if tf.sha256() != want {
        bail!(
            "{} has SHA-256 {}, but {} records {want}: the file was changed after `rlhf prepare` wrote it; run prepare again",
            path.display(),
            tf.sha256(),
            dir.join(META_FILE).display()
        );
    }
    Ok(Some(tf))
}

/// Errors unless the prepared data in `dir` (its `meta.json`, which must exist) was encoded with a
/// vocabulary of `model_vocab` ids, the model's: data from another tokenizer would train the model's rows
/// on ids that mean other tokens.
pub fn check_data_vocab(dir: &Path, model_vocab: usize) -> Result<()> {
    let meta = Meta::load(dir)?;
    if meta.vocab_size != model_vocab {
        bail!(
            "{}: the data was encoded with a tokenizer of {} ids ({}), but the model's vocabulary has {model_vocab} \
             ids: prepare the data with the model's tokenizer",
            dir.join(META_FILE).display(),
            meta.vocab_size,
            meta.tokenizer
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_follows_vocab() {
        assert_eq!(shard_version(50257), 1);
        assert_eq!(shard_version(65536), 1);
        assert_eq!(shard_version(65537), 2);
    }

    #[test]
    fn shard_bytes_layout() {
        let b = shard_bytes(&[1, 2, 65535], 65536).unwrap();
        assert_eq!(b.len(), HEADER_BYTES + 6);
        assert_eq!(&b[0..4], &SHARD_MAGIC.to_le_bytes());
        assert_eq!(&b[4..8], &1i32.to_le_bytes());
        assert_eq!(&b[8..12], &3i32.to_le_bytes());
        assert_eq!(&b[HEADER_BYTES..], &[1, 0, 2, 0, 255, 255]);
        assert!(shard_bytes(&[5], 5).is_err());
    }
}
