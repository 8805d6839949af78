//! `rlhf export`: the settings and the work live with the checkpoints (`crate::checkpoint::export`).
pub use crate::checkpoint::export::{run, ExportArgs};
