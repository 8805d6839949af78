//! Critic-free RL for step 3: GRPO (Shao et al. 2024) and RLOO (Ahmadian et al. 2024). G answers per
//! prompt, scored by a reward model or a judge; each answer's advantage is its reward against the others
//! of its group, so no value model is trained.
//!
//! - [`train`]: the loop (rollout, scoring, group advantages, clipped updates, metrics, checkpoints).
//! - [`math`]: the formulas (advantages, token weights, the loss with GRPO's k3 KL and its gradient);
//!   their gradient checks are in `crate::check::losses`.
pub mod math;
pub mod train;

pub use train::{train, GrpoConfig, GrpoSummary, Hooks, Reward};
