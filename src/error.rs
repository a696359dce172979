//! The library's typed errors. Every message names what was wrong and where, so that the CLI can
//! print it as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A model file that cannot be trusted: truncated, corrupted, hostile or from a newer ltvx.
    #[error("{origin}: not a usable ltvx model: {reason}")]
    Format { origin: String, reason: String },

    #[error("invalid graph: {0}")]
    Graph(String),

    #[error("quantization: {0}")]
    Quant(String),

    /// Input data (feature batches, feature files) that does not fit the model.
    #[error("{0}")]
    Input(String),

    #[error("backend {backend}: {reason}")]
    Backend { backend: String, reason: String },

    #[error("interrupted")]
    Interrupted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
