//! Small pieces every layer uses: atomic file writes, the seeded generator, progress bars.
pub mod fs;
pub mod progress;
pub mod rng;
