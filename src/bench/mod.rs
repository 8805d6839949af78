//! Benchmarks behind `rlhf bench`: a training step on any backend ([`cpu`]), generation with the KV cache
//! on any backend ([`generate`]) and the GPU report ([`cuda`]).
pub mod cpu;
pub mod cuda;
pub mod generate;
