//! Step 3 of the pipeline: PPO against a frozen reward model (InstructGPT), and the loop that alternates
//! labelling, reward-model training and PPO.
//!
//! - [`rollout`]: episodes as right-padded [prompt + answer] batches; where logprobs, values and scores are read.
//! - [`trainer`]: the PPO loop (rollout, scoring, GAE, clipped updates, KL control, metrics, checkpoints).
//! - [`label`]: K answers per prompt ranked by a person (terminal) or a judge, into ranked-K JSONL.
//! - [`eval`]: win rate against SFT on held-out prompts; the gold/proxy score vs sqrt(KL) curve.
//! - [`math`]: the per-token formulas (rewards, GAE, whitening, clipped losses and their gradients, KL
//!   controller, statistics) with their gradient checks.
pub mod eval;
pub mod label;
pub mod math;

pub use math::{gradchecks, KlController};
pub mod rollout;
pub mod trainer;

pub use rollout::{Episode, SeqBatch, TrunkHead};
pub use trainer::{train, train_from, Hooks, PpoConfig, PpoSummary};
