//! `tokenizer` subcommands: train a byte-level BPE, encode text, decode ids.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::data::chat::ChatStyle;
use crate::tokenizer::Tokenizer;

/// Train, inspect and use tokenizers.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TokenizerCmd {
    /// Train a GPT-2-style byte-level BPE tokenizer on text files and save it as tokenizer.json.
    ///
    /// The special tokens get the first ids: with the default --chat-format rlhf, <|endoftext|>, <|pad|>,
    /// <|user|>, <|assistant|>, <|end|> (ids 0..4).
    Train {
        /// Training text: one or more .txt or .txt.gz (gzip) files, UTF-8.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Total vocabulary size: special tokens + 256 byte symbols + learnt merges (at least 261).
        #[arg(long, default_value_t = 4096)]
        vocab_size: usize,
        /// Where to write the tokenizer (a Hugging Face tokenizer.json; written atomically).
        #[arg(long)]
        out: PathBuf,
        /// The chat format its special tokens are for: rlhf (ours: <|user|>...<|assistant|>...<|end|>), chatml
        /// (<|endoftext|> <|im_start|> <|im_end|>, as SmolLM2 and Qwen2.5) or llama3 (<|begin_of_text|>
        /// <|end_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|>). Every command that reads a
        /// chat finds the format from these tokens.
        #[arg(long, value_enum, default_value_t = ChatStyle::Rlhf)]
        chat_format: ChatStyle,
    },
    /// Write GPT-2's own tokenizer (its 50257-token byte-level BPE, built offline) as tokenizer.json.
    Decoder(crate::cli::gpt2_tokenizer::Gpt2TokenizerArgs),
    /// Print the token ids of a text, space-separated.
    Encode {
        /// Tokenizer file (tokenizer.json).
        #[arg(long)]
        tokenizer: PathBuf,
        /// Text to encode (standard input when absent); special tokens such as <|endoftext|> are recognised.
        #[arg(long)]
        text: Option<String>,
        /// Also print each token's string, one per line.
        #[arg(long)]
        verbose: bool,
    },
    /// Print the text of a sequence of token ids.
    Decode {
        /// Tokenizer file (tokenizer.json).
        #[arg(long)]
        tokenizer: PathBuf,
        /// Token ids, separated by spaces or commas.
        #[arg(required = true, num_args = 1.., value_delimiter = ',')]
        ids: Vec<u32>,
    },
}

/// Runs one `tokenizer` subcommand.
pub fn run(cmd: TokenizerCmd) -> Result<()> {
    match cmd {
        TokenizerCmd::Decoder(args) => crate::cli::gpt2_tokenizer::run(&args)?,
        TokenizerCmd::Train { input, vocab_size, out, chat_format } => {
            let start = std::time::Instant::now();
            let tok = Tokenizer::train(&input, vocab_size, chat_format.training_tokens())?;
            tok.save(&out).with_context(|| format!("cannot save the tokenizer to {}", out.display()))?;
            println!(
                "trained a byte-level BPE of {} ids on {} file(s) in {:.1}s -> {}",
                tok.vocab_size(),
                input.len(),
                start.elapsed().as_secs_f64(),
                out.display()
            );
            if tok.vocab_size() < vocab_size {
                println!(
                    "note: the text only supported {} of the {vocab_size} requested ids (merges need pairs seen at least twice)",
                    tok.vocab_size()
                );
            }
        }
        TokenizerCmd::Encode { tokenizer, text, verbose } => {
            let tok = Tokenizer::load(&tokenizer)?;
            let text = match text {
                Some(t) => t,
                None => {
                    let mut t = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                        .context("cannot read the text to encode from standard input")?;
                    t
                }
            };
            let ids = tok.try_encode(&text)?;
            let line: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            println!("{}", line.join(" "));
            if verbose {
                for &id in &ids {
                    println!("{id:>7} {:?}", tok.decode(&[id]));
                }
            }
        }
        TokenizerCmd::Decode { tokenizer, ids } => {
            let tok = Tokenizer::load(&tokenizer)?;
            if let Some(&bad) = ids.iter().find(|&&i| i as usize >= tok.vocab_size()) {
                anyhow::bail!(
                    "id {bad} is outside the vocabulary of {} ({} ids)",
                    tokenizer.display(),
                    tok.vocab_size()
                );
            }
            println!("{}", tok.try_decode(&ids)?);
        }
    }
    Ok(())
}
