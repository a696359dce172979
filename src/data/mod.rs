//! Customer data: transaction logs and side tables (attributes, events) in, features out; feature
//! files for scoring, and synthetic customers for calibration and benchmarks.

pub mod attributes;
pub mod events;
pub mod feature_json;
pub mod feature_spec;
pub mod features;
pub mod ingest;
pub mod labels;
pub mod synthetic;
pub mod table;
pub mod transactions;
