//! Step 3 of the pipeline: PPO against a frozen reward model (InstructGPT), and the loop that alternates
//! labelling, reward-model training and PPO.
//!
//! - [`math`]: the per-token formulas (rewards, GAE, whitening, clipped losses and their gradients, KL
//!   controller, statistics) with their gradient checks.
pub mod math;

pub use math::{gradchecks, KlController};
