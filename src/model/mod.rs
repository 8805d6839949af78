//! The models, written once over the [`crate::backend::Backend`] interface: the decoder ([`decoder`]: its
//! tensors, activations, KV cache and LM head; the blocks of GPT-2 in [`gpt2`] and of the Llama family in
//! [`llama`]; its shapes in [`config`]), the scalar reward/value model ([`scalar`], its head in [`head`]), AdamW with
//! the learning-rate schedule ([`optim`]), KV-cache sampling ([`sample`]) and the log-probabilities of
//! answers ([`logprobs`]).
pub mod config;
pub mod decoder;
pub mod gpt2;
pub mod head;
pub mod llama;
pub mod logprobs;
pub mod optim;
pub mod sample;
pub mod scalar;
pub use config::{Arch, Config, Family, LlamaShape, ParamSpec};
pub use decoder::{Acts, Decoder, KvCache, Tensors};
pub use head::{HeadGrads, ScalarHead};
pub use logprobs::{answer_logprobs, pairs_logprobs};
pub use optim::{AdamW, AdamWConfig};
pub use scalar::ScalarModel;
