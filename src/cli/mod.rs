//! Subcommand implementations: one clap `Args` struct and one `run` function per command.
pub mod bench;
pub mod export;
pub mod gpt2_tokenizer;
pub mod gradcheck;
pub mod judge; pub mod demo_data;
pub mod prepare;
pub mod ppo;
pub mod pretrain;
pub mod sample;
pub mod tokenizer;
pub mod reward;
pub mod sft;
