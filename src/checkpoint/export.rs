//! `rlhf export --checkpoint DIR --out HFDIR [--tokenizer tokenizer.json]`: write a Hugging Face folder.
//!
//! The folder holds `model.safetensors` (F32, `transformer.`-prefixed names as `save_pretrained` writes
//! them, LM head tied and omitted), `config.json`, and when a tokenizer is known `tokenizer.json` +
//! `tokenizer_config.json` + `special_tokens_map.json`, so `GPT2LMHeadModel.from_pretrained(HFDIR)` and
//! `AutoTokenizer.from_pretrained(HFDIR)` load it. A policy exports as `GPT2LMHeadModel`. A reward model
//! exports as `GPT2ForSequenceClassification` with `num_labels` 1: its `score.weight` [1, C] is that class's
//! head; a `score.bias` [1], which the class does not have, is kept in the file as an extra tensor (Hugging
//! Face ignores it with a warning, so its scores there are ours minus that constant, which leaves every
//! preference comparison unchanged). A value model exports as `GPT2ForTokenClassification` with `num_labels`
//! 1: `classifier.weight` [1, C] + `classifier.bias` [1], the class's own layout, so its per-token values
//! in Hugging Face equal ours.
//!
//! The tokenizer is `--tokenizer` if given, else a `tokenizer.json` beside the checkpoint, else GPT-2's
//! (built offline) when the vocabulary has GPT-2's 50257 tokens; otherwise none is written and a note says so.

use crate::checkpoint::{self, ModelKind};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The model to export: a checkpoint folder, a `.safetensors` file with `config.json` beside it, or an
    /// llm.c `.bin`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// A `tokenizer.json` to ship with the model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    pub kind: ModelKind,
    pub tokenizer: Option<PathBuf>,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let r = export(&args.checkpoint, &args.out, args.tokenizer.as_deref())?;
    println!("exported {} model {} to {}", r.kind.as_str(), args.checkpoint.display(), args.out.display());
    match &r.tokenizer {
        Some(t) => println!("tokenizer: {}", t.display()),
        None => println!("note: no tokenizer written (pass --tokenizer tokenizer.json to include one)"),
    }
    Ok(())
}

/// Exports `checkpoint` to the Hugging Face folder `out`, then reloads the written model and checks it is
/// bit-identical to the source.
pub fn export(checkpoint_path: &Path, out: &Path, tokenizer: Option<&Path>) -> Result<ExportReport> {
    let ck = checkpoint::load(checkpoint_path)?;
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a folder", out.display());
    }
    checkpoint::save(out, &ck).with_context(|| format!("exporting to {}", out.display()))?;
    let back = checkpoint::load(out).with_context(|| format!("re-reading the export {}", out.display()))?;
    if back != ck {
        bail!("the export in {} does not read back identical to {}", out.display(), checkpoint_path.display());
    }

    let beside = if checkpoint_path.is_dir() {
        checkpoint_path.join("tokenizer.json")
    } else {
        checkpoint_path.parent().unwrap_or(Path::new(".")).join("tokenizer.json")
    };
    let dest = out.join("tokenizer.json");
    let source = match tokenizer {
        Some(t) => Some(t.to_path_buf()),
        None if beside.is_file() => Some(beside),
        None => None,
    };
    let wrote = if let Some(src) = source {
        let text = std::fs::read_to_string(&src).with_context(|| format!("cannot read tokenizer {}", src.display()))?;
        let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{} is not a valid tokenizer.json: {e}", src.display()))?;
        let n = tok.get_vocab_size(true);
        if n > ck.config.vocab_size {
            bail!("tokenizer {} has {n} tokens but the model's vocab_size is {}", src.display(), ck.config.vocab_size);
        }
        if std::fs::canonicalize(&src).ok() != std::fs::canonicalize(&dest).ok() {
            crate::util::fs::write_atomic(&dest, text.as_bytes())?;
        }
        Some(tok)
    } else if ck.config.vocab_size == crate::tokenizer::gpt2::VOCAB_SIZE {
        crate::tokenizer::gpt2::write_tokenizer_json(&dest, false)?;
        Some(crate::tokenizer::gpt2::build()?)
    } else {
        None
    };
    if let Some(tok) = &wrote {
        write_tokenizer_side_files(out, tok, ck.config.n_positions)?;
    }
    Ok(ExportReport { kind: ck.kind, tokenizer: wrote.map(|_| dest) })
}

/// `tokenizer_config.json` and `special_tokens_map.json` for a `tokenizer.json` in `out`.
fn write_tokenizer_side_files(out: &Path, tok: &tokenizers::Tokenizer, max_len: usize) -> Result<()> {
    let eot = crate::tokenizer::gpt2::EOT;
    let has_eot = tok.token_to_id(eot).is_some();
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
        "add_prefix_space": false,
    });
    let mut special = json!({});
    if has_eot {
        for k in ["bos_token", "eos_token", "unk_token"] {
            cfg[k] = json!(eot);
            special[k] = json!(eot);
        }
    }
    for (name, v) in [("tokenizer_config.json", cfg), ("special_tokens_map.json", special)] {
        let text = serde_json::to_string_pretty(&v)? + "\n";
        crate::util::fs::write_atomic(&out.join(name), text.as_bytes())?;
    }
    Ok(())
}
