//! The tokenizer a model was trained with, stored with it, and the one rule every command uses to pick the
//! tokenizer for the models it reads ([`resolve`]).
//!
//! # Stored with every checkpoint
//! Every command that writes a checkpoint copies the tokenizer it used into the folder as `tokenizer.json`
//! (byte for byte) and records its SHA-256 in `config.json`:
//! `"rlhf": {"kind": ..., "format": 1, "tokenizer": {"file": "tokenizer.json", "sha256": "..."}}`.
//! [`recorded`] reads it back (refusing a file whose hash no longer matches). A Hugging Face folder without
//! our section counts its own `tokenizer.json`, when it has one, as its recorded tokenizer. Checkpoints
//! written before tokenizers were stored, llm.c files and folders without a `tokenizer.json` record none.
//! A token folder from `rlhf prepare` records its tokenizer the same way, in `meta.json`
//! (`crate::data::shards::recorded_tokenizer`).
//!
//! # Which tokenizer a command uses ([`resolve`])
//! - without `--tokenizer`: the one the models (and token folder) it reads record; they must all record the
//!   same file (by hash), else the command is refused naming both; where none records one, `--tokenizer`
//!   is required and the error says so;
//! - with `--tokenizer T`: T, which must hash the same as every recorded tokenizer; a different one is
//!   refused naming both files and both hashes, unless `--force-tokenizer` (a warning on stderr). SFT
//!   alone accepts a T that extends the base model's tokenizer with new tokens ([`resolve_growing`]: GPT-2
//!   with the chat tokens, whose embedding SFT grows).

use crate::checkpoint::{run_dir, CONFIG_FILE};
use crate::data::chat::ChatFormat;
use crate::tokenizer::{Tokenizer, TokenizerFile, TOKENIZER_FILE};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The `--tokenizer` / `--force-tokenizer` flags of every command that reads a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TokenizerArgs {
    /// The tokenizer.json to use. Optional: by default, the tokenizer stored with the model(s) this command
    /// reads (the tokenizer.json in each checkpoint folder, its SHA-256 recorded in config.json; a Hugging
    /// Face folder's own tokenizer.json; for pretrain, the one `rlhf prepare` copied into --data). Needed
    /// only where none is stored (checkpoints and token folders written before tokenizers were stored with
    /// them, llm.c files). A file whose SHA-256 differs from the stored one is refused, unless
    /// --force-tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Use --tokenizer even though its SHA-256 differs from the tokenizer stored with the model(s) (a
    /// warning is printed: ids may then mean other tokens than the ones the model learnt).
    #[arg(long, requires = "tokenizer")]
    #[serde(default)]
    pub force_tokenizer: bool,
}

impl TokenizerArgs {
    /// `--tokenizer PATH` without `--force-tokenizer`.
    pub fn path(path: impl Into<PathBuf>) -> TokenizerArgs {
        TokenizerArgs { tokenizer: Some(path.into()), force_tokenizer: false }
    }
}

/// Where a recorded tokenizer may come from; the flag names it in messages (e.g. "--policy").
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A model: a checkpoint folder, a run folder (its latest checkpoint), a Hugging Face folder, a
    /// `.safetensors` file with `config.json` beside it, or an llm.c file.
    Model(&'a str, &'a Path),
    /// A token folder written by `rlhf prepare`.
    Data(&'a str, &'a Path),
}

impl Source<'_> {
    fn describe(&self) -> String {
        match self {
            Source::Model(flag, p) | Source::Data(flag, p) => format!("{flag} {}", p.display()),
        }
    }

    fn recorded(&self) -> Result<Option<TokenizerFile>> {
        match self {
            Source::Model(_, p) => recorded(p),
            Source::Data(_, p) => crate::data::shards::recorded_tokenizer(p),
        }
    }
}

/// What `config.json`'s `rlhf.tokenizer` holds.
#[derive(Serialize, Deserialize)]
struct Record {
    file: String,
    sha256: String,
}

/// The `rlhf.tokenizer` value recording `tf` (stored as `tokenizer.json` beside the config).
pub fn record_json(tf: &TokenizerFile) -> Value {
    json!({"file": TOKENIZER_FILE, "sha256": tf.sha256()})
}

/// The tokenizer recorded with a model (see the module doc): `None` when it records none.
pub fn recorded(path: &Path) -> Result<Option<TokenizerFile>> {
    let path = run_dir::resolve_checkpoint(path)?;
    let folder = if path.is_dir() {
        path.clone()
    } else if path.extension().is_some_and(|e| e == "safetensors") {
        path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned()
    } else {
        return Ok(None); // an llm.c model file
    };
    let config = folder.join(CONFIG_FILE);
    let record = match std::fs::read_to_string(&config) {
        Ok(text) => {
            let v: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config.display()))?;
            match v.get("rlhf").and_then(|r| r.get("tokenizer")) {
                Some(r) => Some(serde_json::from_value::<Record>(r.clone()).with_context(|| {
                    format!("{}: rlhf.tokenizer is {r}, expected {{\"file\", \"sha256\"}}", config.display())
                })?),
                None => None,
            }
        }
        Err(_) => None,
    };
    let Some(record) = record else {
        // A Hugging Face folder (or anything else written without our record): its own tokenizer.json.
        let own = folder.join(TOKENIZER_FILE);
        return if own.is_file() { TokenizerFile::read(&own).map(Some) } else { Ok(None) };
    };
    if record.file.contains(['/', '\\']) || record.file.is_empty() {
        bail!("{}: rlhf.tokenizer.file is {:?}, not a file name in the folder", config.display(), record.file);
    }
    let file = folder.join(&record.file);
    let tf = TokenizerFile::read(&file).with_context(|| {
        format!("{} records the tokenizer {} (SHA-256 {})", config.display(), record.file, record.sha256)
    })?;
    if tf.sha256() != record.sha256 {
        bail!(
            "{} has SHA-256 {}, but {} records {}: the tokenizer was changed after the checkpoint was written",
            file.display(),
            tf.sha256(),
            config.display(),
            record.sha256
        );
    }
    Ok(Some(tf))
}

/// The tokenizer for a command that reads `sources` (the rule in the module doc).
pub fn resolve(args: &TokenizerArgs, sources: &[Source]) -> Result<TokenizerFile> {
    resolve_with(args, sources, false)?.ok_or_else(|| none_recorded(sources))
}

/// As [`resolve`], also accepting a `--tokenizer` that extends a recorded one with new tokens (a note on
/// stderr): SFT, which grows the model's embedding by them.
pub fn resolve_growing(args: &TokenizerArgs, sources: &[Source]) -> Result<TokenizerFile> {
    resolve_with(args, sources, true)?.ok_or_else(|| none_recorded(sources))
}

/// As [`resolve`], `None` where nothing is recorded and no `--tokenizer` is given (export, which then
/// writes the model alone).
pub fn resolve_optional(args: &TokenizerArgs, sources: &[Source]) -> Result<Option<TokenizerFile>> {
    resolve_with(args, sources, false)
}

fn none_recorded(sources: &[Source]) -> anyhow::Error {
    let names: Vec<String> = sources.iter().map(Source::describe).collect();
    anyhow::anyhow!(
        "no tokenizer is stored with {} (written before checkpoints and token folders carried their tokenizer, \
         an llm.c file, or a Hugging Face folder without tokenizer.json): pass --tokenizer with the \
         tokenizer.json the model was trained with",
        names.join(" or ")
    )
}

fn resolve_with(args: &TokenizerArgs, sources: &[Source], growing: bool) -> Result<Option<TokenizerFile>> {
    let mut recs: Vec<(String, TokenizerFile)> = vec![];
    for s in sources {
        if let Some(tf) = s.recorded()? {
            recs.push((s.describe(), tf));
        }
    }
    let force = args.force_tokenizer && args.tokenizer.is_some();
    if let Some((first, t0)) = recs.first() {
        if let Some((other, t)) = recs.iter().find(|(_, t)| t.sha256() != t0.sha256()) {
            if !force {
                bail!(
                    "{first} was trained with the tokenizer {} but {other} with {}: the models must share one \
                     tokenizer (to use one for both anyway: --tokenizer FILE --force-tokenizer)",
                    t0.describe(),
                    t.describe()
                );
            }
        }
    }
    let Some(path) = &args.tokenizer else { return Ok(recs.into_iter().next().map(|(_, t)| t)) };
    let tf = TokenizerFile::read(path)?;
    let mut warned = vec![];
    for (what, r) in &recs {
        if r.sha256() == tf.sha256() || warned.contains(&r.sha256()) {
            continue;
        }
        if growing && tf.extends(r) {
            eprintln!(
                "note: --tokenizer {} extends the tokenizer of {what} ({} -> {} ids); the model's embedding grows to match",
                tf.describe(),
                r.tokenizer().vocab_size(),
                tf.tokenizer().vocab_size()
            );
        } else if force {
            eprintln!(
                "WARNING: --force-tokenizer: using --tokenizer {} although {what} was trained with {}; the \
                 token ids may mean other tokens than the model learnt",
                tf.describe(),
                r.describe()
            );
        } else {
            bail!(
                "--tokenizer {} is not the tokenizer {what} was trained with: {} (leave --tokenizer out to use \
                 that one, or add --force-tokenizer to use {} anyway)",
                tf.describe(),
                r.describe(),
                path.display()
            );
        }
        warned.push(r.sha256());
    }
    Ok(Some(tf))
}

/// The special tokens Hugging Face reads from a model's files (`config.json`'s `*_token_id`,
/// `tokenizer_config.json`), as (token, id). A chat tokenizer ([`ChatFormat`]): BOS the conversation's start
/// token (Llama 3) or the end-of-text token, EOS the end token (where answers stop), padding the format's;
/// and the chat template. Any other: BOS and EOS the end-of-text token, no padding token, no template.
#[derive(Clone, Debug, PartialEq)]
pub struct HfSpecialTokens {
    pub bos: (String, u32),
    pub eos: (String, u32),
    pub pad: Option<(String, u32)>,
    /// The chat format as a Jinja template, for a chat tokenizer (the export carries it).
    pub chat_template: Option<&'static str>,
}

pub fn hf_special_tokens(tok: &Tokenizer) -> HfSpecialTokens {
    let named = |id: u32| (tok.id_token(id).unwrap_or_default(), id);
    let eot = named(tok.eot());
    match ChatFormat::from_tokenizer(tok) {
        Ok(ct) => HfSpecialTokens {
            bos: ct.start().first().map_or(eot, |&id| named(id)),
            eos: named(ct.end),
            pad: Some(named(ct.pad)),
            chat_template: Some(ct.chat_template()),
        },
        Err(_) => HfSpecialTokens { bos: eot.clone(), eos: eot, pad: None, chat_template: None },
    }
}
