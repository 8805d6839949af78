//! `rlhf tokenizer gpt2 --out tokenizer.json`: write GPT-2's tokenizer (built offline) as `tokenizer.json`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct Gpt2TokenizerArgs {
    /// Where to write the Hugging Face `tokenizer.json`.
    #[arg(long, default_value = "tokenizer.json")]
    pub out: PathBuf,
    /// Append the chat tokens <|pad|> <|user|> <|assistant|> <|end|> (ids 50257..50260) for SFT, the reward
    /// model and PPO; `rlhf sft` grows a GPT-2 model's embedding to match.
    #[arg(long)]
    pub chat: bool,
}

pub fn run(args: &Gpt2TokenizerArgs) -> Result<()> {
    crate::tokenizer::gpt2::write_tokenizer_json(&args.out, args.chat)?;
    println!(
        "wrote GPT-2 tokenizer ({} tokens, {} = {}) to {}",
        crate::tokenizer::gpt2::VOCAB_SIZE + if args.chat { 4 } else { 0 },
        crate::tokenizer::gpt2::EOT,
        crate::tokenizer::gpt2::EOT_ID,
        args.out.display()
    );
    Ok(())
}
