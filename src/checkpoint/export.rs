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
//! A tokenizer whose vocabulary differs from the model's is refused, as is a model holding NaN or infinite
//! values; a failed export leaves no partial folder.

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

/// Every file an export writes (a re-export over an older one removes those it does not write again).
const EXPORT_FILES: [&str; 5] = [
    checkpoint::MODEL_FILE,
    checkpoint::CONFIG_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Exports `checkpoint` (a checkpoint, or a run folder through its `latest`) to the Hugging Face folder
/// `out`, then reloads the written model and checks it is bit-identical to the source. Everything is
/// checked and written in a temporary folder beside `out` first and moved into `out` only at the end, so a
/// failed export leaves no partial folder (and an existing `out` as it was).
pub fn export(checkpoint_path: &Path, out: &Path, tokenizer: Option<&Path>) -> Result<ExportReport> {
    let source = checkpoint::run_dir::resolve_checkpoint(checkpoint_path)?;
    let ck = checkpoint::load(&source)?;
    check_finite(&ck, &source)?;
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a folder", out.display());
    }
    let Some(out_name) = out.file_name() else {
        bail!("--out {} does not name a folder", out.display());
    };

    // The tokenizer to ship: read and checked against the model before anything is written.
    let beside = |p: &Path| {
        if p.is_dir() {
            p.join("tokenizer.json")
        } else {
            p.parent().unwrap_or(Path::new(".")).join("tokenizer.json")
        }
    };
    let found = [beside(&source), beside(checkpoint_path)].into_iter().find(|b| b.is_file());
    let tok_source = match tokenizer {
        Some(t) => Some(t.to_path_buf()),
        None => found,
    };
    let shipped = match &tok_source {
        Some(src) => {
            let text =
                std::fs::read_to_string(src).with_context(|| format!("cannot read tokenizer {}", src.display()))?;
            let tok = tokenizers::Tokenizer::from_bytes(text.as_bytes())
                .map_err(|e| anyhow::anyhow!("{} is not a valid tokenizer.json: {e}", src.display()))?;
            // Size of the id space (largest id + 1), as the engine counts a tokenizer's vocabulary.
            let n = tok.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
            if n != ck.config.vocab_size {
                bail!(
                    "tokenizer {} has {n} tokens but the model's vocab_size is {}: it is not the model's tokenizer",
                    src.display(),
                    ck.config.vocab_size
                );
            }
            Some((Some(text), tok))
        }
        None if ck.config.vocab_size == crate::tokenizer::gpt2::VOCAB_SIZE => {
            Some((None, crate::tokenizer::gpt2::build()?))
        }
        None => None,
    };

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.export-{}", out_name.to_string_lossy(), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    let written = (|| -> Result<()> {
        checkpoint::save(&tmp, &ck).with_context(|| format!("exporting to {}", out.display()))?;
        let back = checkpoint::load(&tmp).with_context(|| format!("re-reading the export {}", tmp.display()))?;
        if back != ck {
            bail!("the export in {} does not read back identical to {}", tmp.display(), source.display());
        }
        if let Some((text, tok)) = &shipped {
            let dest = tmp.join("tokenizer.json");
            match text {
                Some(text) => crate::util::fs::write_atomic(&dest, text.as_bytes())?,
                None => crate::tokenizer::gpt2::write_tokenizer_json(&dest, false)?,
            }
            write_tokenizer_side_files(&tmp, tok, ck.config.n_positions)?;
        }
        install(&tmp, out)
    })();
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(ExportReport { kind: ck.kind, tokenizer: shipped.map(|_| out.join("tokenizer.json")) })
}

/// Refuses a model with a NaN or infinite value, naming the tensor (it would not survive the round trip
/// check, and no one can use it).
fn check_finite(ck: &checkpoint::Checkpoint, source: &Path) -> Result<()> {
    for t in ck.tensors.iter().chain(&ck.extra) {
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            bail!(
                "{}: tensor '{}' holds a non-finite value ({} at index {i} of {:?}); refusing to export a broken model",
                source.display(),
                t.name,
                t.data[i],
                t.shape
            );
        }
    }
    Ok(())
}

/// Moves the finished export in `tmp` to `out`: one rename when `out` does not exist, else file by file
/// (each rename atomic), removing the files of an earlier export that this one does not have.
fn install(tmp: &Path, out: &Path) -> Result<()> {
    if !out.exists() {
        return std::fs::rename(tmp, out)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()));
    }
    for name in EXPORT_FILES {
        let (from, to) = (tmp.join(name), out.join(name));
        if from.is_file() {
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
        } else if to.is_file() {
            std::fs::remove_file(&to).with_context(|| format!("cannot remove the stale {}", to.display()))?;
        }
    }
    Ok(())
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
