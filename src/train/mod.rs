//! Training, hand-written: forward and backward of every op over mini-batches (im2col + GEMM), the
//! three heads' losses weighted into one, AdamW, and early stopping on a seeded validation slice.
//!
//! Mini-batches are split across threads into contiguous shards whose gradients are summed in shard
//! order, so a run is deterministic for a given seed, thread count and CPU (another thread count
//! may differ in the last bits; so may another CPU, where matrixmultiply picks another kernel). The
//! GEMMs are matrixmultiply's; everything else is here.
//!
//! ```no_run
//! # use ltvx::train::{train, TrainData, TrainOptions};
//! # fn demo(graph: &ltvx::model::graph::Graph, init: &ltvx::model::tensor::Weights, data: &TrainData) -> ltvx::Result<()> {
//! let outcome = train(graph, init, data, &TrainOptions::default(), &mut |e| {
//!     eprintln!("epoch {}: validation loss {:.4} ({:.1} s)", e.epoch, e.validation.total, e.seconds)
//! })?;
//! println!("best epoch {}", outcome.best_epoch);
//! # Ok(()) }
//! ```

mod data;
pub mod distill;
pub mod fine_tune;
pub mod from_log;
mod gemm;
mod graph_exec;
pub mod loss;
mod ops;
mod optim;
mod options;
mod parallel;
mod params;
mod trainer;

#[cfg(test)]
mod gradcheck;

pub use data::{Targets, TrainData};
pub use loss::{LossWeights, Losses};
pub use optim::{Masks, masks_of_zero_weights};
pub use options::TrainOptions;
pub use trainer::{EpochReport, TrainOutcome, evaluate, predict, refit, train};
