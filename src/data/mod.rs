//! Customer data: feature files for scoring, and synthetic customers for calibration and benchmarks.

pub mod feature_spec;
pub mod features;
pub mod ingest;
pub mod labels;
pub mod synthetic;
pub mod transactions;
