//! Small pieces every layer uses: atomic file writes, a panic caught as one part's error, the seeded generator, progress bars, sample means and
//! intervals, text tables, SVG line charts and the step summaries the report is built from.
pub mod fs;
pub mod guard;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod stats;
pub mod summary;
pub mod table;
