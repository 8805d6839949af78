//! `rlhf`: GPT-2-style decoders through the whole RLHF pipeline with an explicit, autograd-free engine.
pub mod backend;
pub mod bench;
pub mod gradcheck;
pub mod model;
pub mod ops;
pub mod rng;
pub mod sample;
