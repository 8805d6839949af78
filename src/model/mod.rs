//! The GPT-2 decoder, written once over the [`crate::backend::Backend`] interface.
pub mod config;
pub mod gpt2;
pub mod head;
pub mod optim;
pub mod persist;
pub use config::{Config, ParamSpec};
pub use gpt2::{Acts, Gpt2, KvCache, Tensors};
pub use head::{HeadGrads, ScalarHead};
pub use optim::{AdamW, AdamWConfig};
