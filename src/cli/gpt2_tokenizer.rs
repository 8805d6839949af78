//! `rlhf tokenizer gpt2 --out tokenizer.json`: write GPT-2's tokenizer (built offline) as `tokenizer.json`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct Gpt2TokenizerArgs {
    /// Where to write the Hugging Face `tokenizer.json`.
    #[arg(long, default_value = "tokenizer.json")]
    pub out: PathBuf,
}

pub fn run(args: &Gpt2TokenizerArgs) -> Result<()> {
    crate::gpt2_tokenizer::write_tokenizer_json(&args.out)?;
    println!(
        "wrote GPT-2 tokenizer ({} tokens, {} = {}) to {}",
        crate::gpt2_tokenizer::VOCAB_SIZE,
        crate::gpt2_tokenizer::EOT,
        crate::gpt2_tokenizer::EOT_ID,
        args.out.display()
    );
    Ok(())
}
