//! `rlhf export --checkpoint CKPT_OR_RUN --out HFDIR [--tokenizer tokenizer.json]`: write a Hugging Face folder.
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
//! The tokenizer is the one stored with the checkpoint (`crate::checkpoint::tokenizer`; `--tokenizer` only
//! where none is, checked against it like every command's), else GPT-2's (built offline) when the
//! vocabulary has GPT-2's 50257 tokens; otherwise the model is exported alone and a note says so. For a
//! chat tokenizer (any `crate::data::chat::ChatFormat`: ours, ChatML, Llama 3), `tokenizer_config.json`
//! carries the chat format as a Jinja `chat_template` (`ChatFormat::chat_template`, so
//! `tokenizer.apply_chat_template` gives the engine's ids), `eos_token` the format's end token (`<|end|>`)
//! and `pad_token` its padding (`<|pad|>`), and `config.json` the matching `eos_token_id` and
//! `pad_token_id`: `GPT2ForSequenceClassification` then scores a right-padded batch at each answer's end
//! token, the token `rlhf score` reads. The export is
//! itself a checkpoint that records its tokenizer. A tokenizer whose vocabulary differs from the model's is
//! refused, as is a model holding NaN or infinite values; a failed export leaves no partial folder.

use crate::checkpoint::safetensors::Dtype;
use crate::checkpoint::tokenizer::{self as ck_tok, Source, TokenizerArgs};
use crate::checkpoint::{self, ModelKind};
use crate::tokenizer::TokenizerFile;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The model to export: a checkpoint folder, a run folder (its latest checkpoint), a `.safetensors`
    /// file with `config.json` beside it, or an llm.c `.bin`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub tokenizer: TokenizerArgs,
    /// How the weights are stored: f32 (exact), or bf16 / f16 (half the size, each value rounded to the
    /// nearest; the export then reads back as the rounded model, which is checked).
    #[arg(long, value_enum, default_value_t = StoredAs::F32)]
    pub dtype: StoredAs,
}

/// The element types an export can store its weights in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredAs {
    F32,
    Bf16,
    F16,
}

impl StoredAs {
    fn dtype(self) -> Dtype {
        match self {
            StoredAs::F32 => Dtype::F32,
            StoredAs::Bf16 => Dtype::BF16,
            StoredAs::F16 => Dtype::F16,
        }
    }

    /// `x` as it reads back after being stored.
    fn round(self, x: f32) -> f32 {
        match self {
            StoredAs::F32 => x,
            StoredAs::Bf16 => half::bf16::from_f32(x).to_f32(),
            StoredAs::F16 => half::f16::from_f32(x).to_f32(),
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    pub kind: ModelKind,
    /// The exported `tokenizer.json`, if one was written.
    pub tokenizer: Option<PathBuf>,
    /// Whether `tokenizer_config.json` carries the chat template (a chat tokenizer).
    pub chat_template: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let r = export_as(&args.checkpoint, &args.out, &args.tokenizer, args.dtype)?;
    println!(
        "exported {} model {} to {} ({})",
        r.kind.as_str(),
        args.checkpoint.display(),
        args.out.display(),
        args.dtype.dtype().name()
    );
    match &r.tokenizer {
        Some(t) if r.chat_template => println!("tokenizer: {} (with the chat template)", t.display()),
        Some(t) => println!("tokenizer: {}", t.display()),
        None => println!(
            "note: no tokenizer written: {} stores none (pass --tokenizer tokenizer.json to include one)",
            args.checkpoint.display()
        ),
    }
    Ok(())
}

/// Every file an export writes (a re-export over an older one removes those it does not write again).
const EXPORT_FILES: [&str; 5] = [
    checkpoint::MODEL_FILE,
    checkpoint::CONFIG_FILE,
    crate::tokenizer::TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Exports `checkpoint` (a checkpoint, or a run folder through its `latest`) to the Hugging Face folder
/// `out` in F32, then reloads the written model and checks it is bit-identical to the source. Everything
/// is checked and written in a temporary folder beside `out` first and moved into `out` only at the end, so
/// a failed export leaves no partial folder (and an existing `out` as it was).
pub fn export(checkpoint_path: &Path, out: &Path, tokenizer: &TokenizerArgs) -> Result<ExportReport> {
    export_as(checkpoint_path, out, tokenizer, StoredAs::F32)
}

/// As [`export`], the weights stored as `stored`; the written model must read back bit-identical to the
/// source rounded to that type.
pub fn export_as(
    checkpoint_path: &Path,
    out: &Path,
    tokenizer: &TokenizerArgs,
    stored: StoredAs,
) -> Result<ExportReport> {
    let source = checkpoint::run_dir::resolve_checkpoint(checkpoint_path)?;
    let mut ck = checkpoint::load(&source)?;
    check_finite(&ck, &source)?;
    if stored != StoredAs::F32 {
        for t in ck.tensors.iter_mut().chain(&mut ck.extra) {
            t.data.iter_mut().for_each(|x| *x = stored.round(*x));
        }
        // F16's range ends at 65504: a larger weight would be stored as infinite.
        check_finite(&ck, &source).with_context(|| format!("the model does not fit in {}", stored.dtype().name()))?;
    }
    if out.exists() && !out.is_dir() {
        bail!("--out {} exists and is not a folder", out.display());
    }
    let Some(out_name) = out.file_name() else {
        bail!("--out {} does not name a folder", out.display());
    };

    // The tokenizer to ship: read and checked against the model before anything is written.
    let shipped = match ck_tok::resolve_optional(tokenizer, &[Source::Model("--checkpoint", checkpoint_path)])? {
        Some(tf) => Some(tf),
        None if ck.config.vocab_size == crate::tokenizer::gpt2::VOCAB_SIZE => Some(gpt2_builtin()?),
        None => None,
    };
    if let Some(tf) = &shipped {
        let what = format!("tokenizer {}", tf.source().display());
        crate::tokenizer::check_vocab(tf.tokenizer().vocab_size(), ck.config.vocab_size, &what)?;
    }

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.export-{}", out_name.to_string_lossy(), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    let mut chat_template = false;
    let written = (|| -> Result<()> {
        checkpoint::save_as(&tmp, &ck, shipped.as_ref(), stored.dtype())
            .with_context(|| format!("exporting to {}", out.display()))?;
        let back = checkpoint::load(&tmp).with_context(|| format!("re-reading the export {}", tmp.display()))?;
        if back != ck {
            bail!("the export in {} does not read back identical to {}", tmp.display(), source.display());
        }
        if let Some(tf) = &shipped {
            chat_template = write_tokenizer_side_files(&tmp, tf, ck.config.n_positions)?;
        }
        install(&tmp, out)
    })();
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(ExportReport {
        kind: ck.kind,
        tokenizer: shipped.map(|_| out.join(crate::tokenizer::TOKENIZER_FILE)),
        chat_template,
    })
}

/// GPT-2's own tokenizer (built offline), for a GPT-2-vocabulary model that stores none.
fn gpt2_builtin() -> Result<TokenizerFile> {
    let tok = crate::tokenizer::gpt2::build()?;
    let text = tok.to_string(true).map_err(|e| anyhow::anyhow!("cannot serialise GPT-2's tokenizer: {e}"))?;
    TokenizerFile::from_bytes(text.into_bytes(), Path::new("GPT-2's tokenizer (built in)"))
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

/// `tokenizer_config.json` and `special_tokens_map.json` for the `tokenizer.json` in `out`; the chat
/// template and the padding token for a chat tokenizer. Returns whether the chat template was written.
fn write_tokenizer_side_files(out: &Path, tf: &TokenizerFile, max_len: usize) -> Result<bool> {
    let sp = ck_tok::hf_special_tokens(tf.tokenizer());
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
        "add_prefix_space": false,
    });
    let mut special = json!({});
    let unk = tf.tokenizer().eot_token();
    for (k, tok) in [("bos_token", &sp.bos.0), ("eos_token", &sp.eos.0), ("unk_token", &unk)] {
        cfg[k] = json!(tok);
        special[k] = json!(tok);
    }
    if let Some((pad, _)) = &sp.pad {
        cfg["pad_token"] = json!(pad);
        special["pad_token"] = json!(pad);
    }
    if let Some(template) = sp.chat_template {
        cfg["chat_template"] = json!(template);
    }
    for (name, v) in [("tokenizer_config.json", cfg), ("special_tokens_map.json", special)] {
        let text = serde_json::to_string_pretty(&v)? + "\n";
        crate::util::fs::write_atomic(&out.join(name), text.as_bytes())?;
    }
    Ok(sp.chat_template.is_some())
}
