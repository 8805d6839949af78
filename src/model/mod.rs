//! The GPT-2 decoder, written once over the [`crate::backend::Backend`] interface.
pub mod config;
pub use config::Config;
