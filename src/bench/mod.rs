//! Benchmarks behind `rlhf bench`: a training step on any backend ([`cpu`]) and the GPU report ([`cuda`]).
pub mod cpu;
pub mod cuda;
