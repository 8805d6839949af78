//! `rlhf`: GPT-2-style decoders through the whole RLHF pipeline with an explicit, autograd-free engine.
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod device;
pub mod fsutil;
pub mod gpt2_tokenizer;
pub mod gradcheck;
pub mod metrics;
pub mod progress;
pub mod model;
pub mod ops;
pub mod ppo;
pub mod rng;
pub mod run_dir;
pub mod sample;
