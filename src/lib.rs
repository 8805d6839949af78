//! `rlhf`: GPT-2-style decoders through the whole RLHF pipeline with an explicit, autograd-free engine.
//!
//! The crate in layers, bottom to top; a module imports only from the layers below it.
pub mod backend; //    the Backend trait (the seam between model and hardware) and the CPU backend
pub mod bench; //      training-step and kernel benchmarks
pub mod check; //      gradient checks (finite differences in f64) and kernel-vs-CPU checks
pub mod checkpoint; // every model <-> file conversion: safetensors + config.json, llm.c files, HF export
pub mod cli;
pub mod data; //       token shards, JSONL records, the chat format, padded batches, prepare, the demo data
pub mod judge; //      gold judges: the built-in lexicon and any program speaking the JSONL protocol
pub mod kernels; //    the CUDA kernels' launch layer, the GPU and simulator devices, the kernel backend
pub mod model; //      GPT-2 over any backend, the scalar (reward/value) model, AdamW, the sampler
pub mod ops; //        every op's math, forward and backward, as CPU reference functions over slices
pub mod pipeline; //   the steps: the run scaffold, pretrain, SFT, label, reward model, PPO, DPO, GRPO, eval
pub mod tokenizer; //  tokenizer.json loading and training, GPT-2's own vocabulary built offline
pub mod util; //       small shared pieces: atomic file writes, the seeded generator, progress bars, statistics //        the command line: one thin adapter per subcommand
