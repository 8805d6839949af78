//! Data on disk and in batches.
//!
//! - [`shards`]: llm.c-layout token shards, memory-mapped, and random training windows from them.
//! - [`prepare`]: text files -> train/validation shards (`rlhf prepare`).
//! - [`jsonl`]: the JSONL record shapes (SFT demonstrations, ranked answers, preference pairs, prompts).
//! - [`chat`]: the chat format `<|user|>...<|assistant|>...<|end|>` and fitting a pair into the context.
//! - [`preference`]: ranked records encoded as groups of answers, split by prompt (reward model, DPO).
//! - [`batch`]: right-padded prompt + answer batches, language-model batches, the seeded epoch order.
//! - [`demo`]: the demo task's data cut from the Austen corpus.
pub mod batch;
pub mod chat;
pub mod demo;
pub mod jsonl;
pub mod preference;
pub mod prepare;
pub mod shards;
