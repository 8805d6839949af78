//! The models, written once over the [`crate::backend::Backend`] interface: the GPT-2 decoder ([`gpt2`],
//! its shapes in [`config`]), the scalar reward/value model ([`scalar`], its head in [`head`]), AdamW with
//! the learning-rate schedule ([`optim`]), KV-cache sampling ([`sample`]) and the log-probabilities of
//! answers ([`logprobs`]).
pub mod config;
pub mod gpt2;
pub mod head;
pub mod logprobs;
pub mod optim;
pub mod sample;
pub mod scalar;
pub use config::{Config, ParamSpec};
pub use gpt2::{Acts, Gpt2, KvCache, Tensors};
pub use head::{HeadGrads, ScalarHead};
pub use logprobs::{answer_logprobs, pairs_logprobs};
pub use optim::{AdamW, AdamWConfig};
pub use scalar::ScalarModel;
