//! Small pieces every layer uses: atomic file writes, the seeded generator, progress bars, sample means and
//! intervals, text tables.
pub mod fs;
pub mod progress;
pub mod rng;
pub mod stats;
pub mod table;
