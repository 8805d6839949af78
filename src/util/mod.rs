//! Small pieces every layer uses: atomic file writes, the seeded generator, progress bars, sample means.
pub mod fs;
pub mod progress;
pub mod rng;
pub mod stats;
