//! `rlhf prepare`: the settings and the work live with the data (`crate::data::prepare`).
pub use crate::data::prepare::{run, PrepareArgs};
