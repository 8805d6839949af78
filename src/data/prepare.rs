//! `prepare`: turn text files into train/validation token shards.
//!
//! The inputs are split into documents (by default paragraphs: runs of lines separated by one or more
//! blank lines), each document is encoded and followed by `<|endoftext|>`, and each document goes to the
//! validation split with probability `--val-fraction`, decided by a generator seeded with `--seed` (so
//! the same inputs and seed always give the same split). The output directory receives
//! `train_000.bin, ...`, `val_000.bin, ...` (see [`crate::data::shards`] for the format), `meta.json`, and
//! a copy of the tokenizer (`tokenizer.json`, its SHA-256 in `meta.json`), which `pretrain` stores with its
//! checkpoints.
//!
//! Everything is written to a staging directory first and moved into place only when all of it
//! succeeded, so a failed run never damages data prepared earlier. The install itself (one rename per
//! file) removes the old `meta.json` first and writes the new one last: `meta.json` lists every shard with
//! its size and hash, and the shard loader refuses a directory that does not match it, so a `prepare`
//! killed halfway through the install leaves a directory that is refused, never one mixing two runs' splits.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::data::shards::{shard_bytes, Meta, ShardInfo, SplitMeta, META_FILE, SHARD_TOKENS};
use crate::tokenizer::{read_text, TokenizerFile, TOKENIZER_FILE};
use crate::util::rng::Rng;

/// How input text is cut into documents (each followed by `<|endoftext|>`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DocSplit {
    /// Paragraphs: text separated by one or more blank (or whitespace-only) lines.
    #[default]
    Paragraphs,
    /// Every non-blank line is a document.
    Lines,
    /// Every input file is one document.
    Files,
}

impl DocSplit {
    fn name(self) -> &'static str {
        match self {
            DocSplit::Paragraphs => "paragraphs",
            DocSplit::Lines => "lines",
            DocSplit::Files => "files",
        }
    }
}

/// Encode text files into train/validation token shards for pretraining.
#[derive(clap::Args, Debug, Clone)]
pub struct PrepareArgs {
    /// Tokenizer file (tokenizer.json) to encode with; it must define <|endoftext|>.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Text corpus: one or more .txt or .txt.gz (gzip) UTF-8 files, read in the order given.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Output directory for train_NNN.bin, val_NNN.bin and meta.json (created if missing; earlier
    /// shards there are replaced only once the new ones are complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of documents held out for validation, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of the train/validation assignment of documents.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// How the input text is cut into documents.
    #[arg(long, value_enum, default_value_t = DocSplit::Paragraphs)]
    pub documents: DocSplit,
    /// Largest number of tokens per shard file.
    #[arg(long, default_value_t = SHARD_TOKENS)]
    pub shard_tokens: usize,
}

impl PrepareArgs {
    /// Refuses settings out of range, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            bail!("--val-fraction must be in [0, 1) (got {})", self.val_fraction);
        }
        if self.shard_tokens == 0 || self.shard_tokens > i32::MAX as usize {
            bail!("--shard-tokens must be between 1 and {} (got {})", i32::MAX, self.shard_tokens);
        }
        Ok(())
    }
}

/// Cuts `text` into documents: trimmed of surrounding blank lines, never empty.
pub fn split_documents(text: &str, how: DocSplit) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    match how {
        DocSplit::Files => {
            let t = text.trim_matches('\n').trim_end();
            if t.trim().is_empty() {
                vec![]
            } else {
                vec![t.to_string()]
            }
        }
        DocSplit::Lines => {
            text.lines().map(|l| l.trim_end()).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
        }
        DocSplit::Paragraphs => {
            let mut docs = Vec::new();
            let mut cur: Vec<&str> = Vec::new();
            for line in text.lines() {
                if line.trim().is_empty() {
                    if !cur.is_empty() {
                        docs.push(cur.join("\n"));
                        cur.clear();
                    }
                } else {
                    cur.push(line.trim_end());
                }
            }
            if !cur.is_empty() {
                docs.push(cur.join("\n"));
            }
            docs
        }
    }
}

/// Runs `prepare`: encode, split, write shards and meta.json, print a summary.
pub fn run(args: PrepareArgs) -> Result<()> {
    let start = std::time::Instant::now();
    args.validate()?;
    let tok_file = TokenizerFile::read(&args.tokenizer)?;
    let tok = tok_file.tokenizer();
    let eot = tok.eot();

    let mut docs = Vec::new();
    for path in &args.input {
        let text = read_text(path)?;
        let d = split_documents(&text, args.documents);
        if d.is_empty() {
            bail!("input file {} contains no documents", path.display());
        }
        docs.extend(d);
    }

    // Deterministic assignment: one uniform draw per document, in input order.
    let mut rng = Rng::new(args.seed);
    let mut is_val: Vec<bool> = docs.iter().map(|_| rng.uniform() < args.val_fraction).collect();
    if args.val_fraction > 0.0 {
        if docs.len() < 2 {
            bail!("the corpus has a single document: cannot hold out a validation split (use --val-fraction 0)");
        }
        // Tiny corpora: make sure both splits are non-empty.
        if !is_val.iter().any(|&v| v) {
            let last = is_val.len() - 1;
            is_val[last] = true;
        }
        if is_val.iter().all(|&v| v) {
            is_val[0] = false;
        }
    }

    let encoded: Vec<Vec<u32>> = docs
        .par_iter()
        .map(|d| {
            let mut ids = tok.try_encode(d)?;
            ids.push(eot);
            Ok(ids)
        })
        .collect::<Result<_>>()?;

    let mut train = Vec::new();
    let mut val = Vec::new();
    let (mut train_docs, mut val_docs) = (0u64, 0u64);
    for (ids, &v) in encoded.iter().zip(&is_val) {
        if v {
            val.extend_from_slice(ids);
            val_docs += 1;
        } else {
            train.extend_from_slice(ids);
            train_docs += 1;
        }
    }
    drop(encoded);

    let vocab = tok.vocab_size();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let staging = args.out.join(format!(".prepare-staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = (|| -> Result<Meta> {
        let train_shards = write_split(&staging, "train", &train, vocab, args.shard_tokens)?;
        let val_shards = write_split(&staging, "val", &val, vocab, args.shard_tokens)?;
        let names = |m: &[ShardInfo]| m.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        let meta = Meta {
            vocab_size: vocab,
            eot,
            tokenizer: args.tokenizer.display().to_string(),
            tokenizer_sha256: Some(tok_file.sha256().to_string()),
            inputs: args.input.iter().map(|p| p.display().to_string()).collect(),
            documents: args.documents.name().to_string(),
            val_fraction: args.val_fraction,
            seed: args.seed,
            train: SplitMeta {
                tokens: train.len() as u64,
                documents: train_docs,
                shards: names(&train_shards),
                manifest: train_shards,
            },
            val: SplitMeta {
                tokens: val.len() as u64,
                documents: val_docs,
                shards: names(&val_shards),
                manifest: val_shards,
            },
        };
        meta.validate().context("internal error: the new meta.json is inconsistent")?;
        tok_file.write(&staging.join(TOKENIZER_FILE))?;
        let json = serde_json::to_string_pretty(&meta)?;
        crate::util::fs::write_atomic(&staging.join(META_FILE), json.as_bytes())?;
        install(&staging, &args.out, &meta)?;
        Ok(meta)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    let meta = result?;

    println!(
        "prepared {} in {:.1}s: {} documents from {} file(s), vocabulary {} ids",
        args.out.display(),
        start.elapsed().as_secs_f64(),
        docs.len(),
        args.input.len(),
        vocab
    );
    for (name, s) in [("train", &meta.train), ("val", &meta.val)] {
        println!("  {name:>5}: {:>10} tokens, {:>7} documents, {} shard(s)", s.tokens, s.documents, s.shards.len());
    }
    let chars: usize = docs.iter().map(|d| d.chars().count()).sum();
    let total = meta.train.tokens + meta.val.tokens;
    if total > 0 {
        println!("  {:.2} characters per token (<|endoftext|> included)", chars as f64 / total as f64);
    }
    Ok(())
}

/// Writes `tokens` as `DIR/{split}_NNN.bin` shards of at most `per_shard` tokens; returns their records
/// (name, tokens, size, hash) for `meta.json`.
fn write_split(dir: &Path, split: &str, tokens: &[u32], vocab: usize, per_shard: usize) -> Result<Vec<ShardInfo>> {
    let mut infos = Vec::new();
    for (i, chunk) in tokens.chunks(per_shard).enumerate() {
        let name = format!("{split}_{i:03}.bin");
        let path = dir.join(&name);
        let bytes = shard_bytes(chunk, vocab).with_context(|| format!("cannot write shard {}", path.display()))?;
        crate::util::fs::write_atomic(&path, &bytes)?;
        infos.push(ShardInfo::of(&name, &bytes));
    }
    Ok(infos)
}

/// Replaces the shards and meta.json in `out` by the staged ones: the old meta.json is removed first (from
/// then on the directory is refused until the new one is in place), new shards are renamed over old ones
/// of the same name, then shards of earlier runs that are not part of the new set are removed (they
/// would otherwise be read as extra data), then the tokenizer, and meta.json comes last.
fn install(staging: &Path, out: &Path, meta: &Meta) -> Result<()> {
    let old_meta = out.join(META_FILE);
    match std::fs::remove_file(&old_meta) {
        Ok(()) => sync_dir(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove the old {}", old_meta.display())),
    }
    let new: Vec<&String> = meta.train.shards.iter().chain(&meta.val.shards).collect();
    for name in &new {
        let (from, to) = (staging.join(name), out.join(name));
        std::fs::rename(&from, &to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    }
    for e in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let e = e.with_context(|| format!("cannot read {}", out.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        let shard = (name.starts_with("train_") || name.starts_with("val_")) && name.ends_with(".bin");
        if shard && !new.iter().any(|n| **n == name) && e.path().is_file() {
            std::fs::remove_file(e.path())
                .with_context(|| format!("cannot remove old shard {}", e.path().display()))?;
        }
    }
    let (from, to) = (staging.join(TOKENIZER_FILE), out.join(TOKENIZER_FILE));
    std::fs::rename(&from, &to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    sync_dir(out);
    let (from, to) = (staging.join(META_FILE), out.join(META_FILE));
    std::fs::rename(&from, &to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    sync_dir(out);
    Ok(())
}

/// Flushes a directory's entries (renames, removals) to disk, so they reach it in order; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_lines_files() {
        let t = "\n\nChapter 1\n\n\nIt is a truth\nuniversally acknowledged.  \n \nEnd\n";
        assert_eq!(
            split_documents(t, DocSplit::Paragraphs),
            vec!["Chapter 1", "It is a truth\nuniversally acknowledged.", "End"]
        );
        assert_eq!(
            split_documents(t, DocSplit::Lines),
            vec!["Chapter 1", "It is a truth", "universally acknowledged.", "End"]
        );
        assert_eq!(split_documents(t, DocSplit::Files).len(), 1);
        assert!(split_documents("\n \n", DocSplit::Paragraphs).is_empty());
    }
}
