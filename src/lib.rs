//! `rlhf`: GPT-2-style decoders through the whole RLHF pipeline with an explicit, autograd-free engine.
pub mod checkpoint;
pub mod cli;
pub mod gpt2_tokenizer;
pub mod model;
pub mod rng;
