//! Models: the op graph, presets, the file format, int8 arithmetic and quantization, initialisation.

pub mod block_prune;
pub mod calibrate;
pub mod format;
pub mod graph;
pub mod init;
pub mod preset;
pub mod prune;
pub mod quant;
pub mod quant_report;
pub mod quantize;
pub mod sparse;
pub mod summary;
pub mod tensor;

pub use format::{Model, ModelFile, ModelMeta, Precision};
pub use graph::{Graph, InputSizes};
pub use preset::Preset;
