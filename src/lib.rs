//! `rlhf`: GPT-2-style decoders through the whole RLHF pipeline with an explicit, autograd-free engine.
pub mod model;
pub mod rng;
pub mod tokenizer;
pub mod data;
pub mod cli;
