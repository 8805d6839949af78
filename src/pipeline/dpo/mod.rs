//! Direct Preference Optimization (Rafailov et al. 2023) and its variants: the policy is trained on
//! preference pairs directly, with no reward model, no value model and no sampling during training.
//!
//! - [`math`]: the loss per pair of answers (DPO, conservative / label-smoothed DPO, IPO) over their
//!   sequence log-ratios log pi - log ref, and its gradient; its gradient checks are in
//!   `crate::check::losses`.
//! - [`reference`]: the frozen reference's sequence log-probs, computed once and kept with the run.
//! - [`train`]: the `rlhf dpo` loop over chosen/rejected and ranked-K preference records.
pub mod math;
pub mod reference;
pub mod train;

pub use math::{preference_loss, PreferenceLoss, PreferenceStats};
pub use train::{dpo, DpoConfig, DpoSummary, LossName};
