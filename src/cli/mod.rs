//! Subcommand implementations: one clap `Args` struct and one `run` function per command.
pub mod bench;
pub mod demo_data;
pub mod device;
pub mod eval;
pub mod export;
pub mod gpt2_tokenizer;
pub mod gradcheck;
pub mod judge;
pub mod label;
pub mod ppo;
pub mod prepare;
pub mod pretrain;
pub mod reward;
pub mod sample;
pub mod sft;
pub mod tokenizer;
