//! Customer data: feature files for scoring, and synthetic customers for calibration and benchmarks.

pub mod features;
pub mod synthetic;
