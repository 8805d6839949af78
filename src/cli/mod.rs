//! Subcommand implementations: one clap `Args` struct and one `run` function per command.
pub mod export;
pub mod gpt2_tokenizer;
