//! The pipeline's steps, each written once over the backend, and what they share.
//!
//! - [`run`]: the training-loop scaffold (run directory, resume, metrics, plots, checkpoints) and the
//!   language-model loop that pretraining and SFT share.
//! - [`rollout`]: sampled episodes as padded batches and their log-probabilities (PPO, GRPO, evaluation),
//!   and the gold judge as the steps call it.
//! - [`surrogate`]: the clipped policy-gradient objective and the first-minibatch ratio check (PPO, GRPO).
//! - [`pretrain`] (step 0), [`sft`] (step 1), [`label`] and [`reward`] (step 2), [`ppo`], [`dpo`] and [`grpo`] (step 3),
//!   [`eval`]; [`report`] gathers their summaries into one page.
//! - [`metrics`]: `metrics.jsonl`, written and read back as series for the plots.
pub mod dpo;
pub mod eval;
pub mod grpo;
pub mod label;
pub mod metrics;
pub mod ppo;
pub mod pretrain;
pub mod report;
pub mod reward;
pub mod rollout;
pub mod run;
pub mod sft;
pub mod surrogate;
