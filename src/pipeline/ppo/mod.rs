//! Step 3 of the pipeline: PPO against a frozen reward model (InstructGPT), and the loop that alternates
//! labelling, reward-model training and PPO.
//!
//! - [`trainer`]: the PPO loop (rollout, scoring, GAE, clipped updates, KL control, metrics, checkpoints).
//! - [`math`]: the per-token formulas (rewards, GAE, whitening, clipped losses and their gradients, KL
//!   controller, statistics); their gradient checks are in `crate::check::losses`.
pub mod math;

pub use math::KlController;
pub mod trainer;

pub use trainer::{train, train_from, Hooks, PpoConfig, PpoSummary};
