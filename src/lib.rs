//! ltvx — an inference engine for e-commerce customer-value models.
//!
//! A model (`*.ltvx`, a safetensors container) holds a small graph — Conv1d over a weekly activity
//! sequence, pooling, dense layers — and three heads: zero-inflated lognormal LTV, churn and value
//! segment. An [`engine::Engine`] builds a plan for a backend and turns feature batches into
//! [`engine::Scores`]. The reference backend is the correctness oracle for every other one.

#[cfg(target_endian = "big")]
compile_error!("ltvx reads little-endian tensors in place and supports little-endian targets only");

pub mod atomic_file;
pub mod backend;
pub mod bench;
pub mod data;
pub mod engine;
pub mod error;
pub mod eval;
pub mod hw;
pub mod model;
pub mod rng;
pub mod serve;
pub mod train;

pub use engine::{Batch, Engine, Scores};
pub use error::{Error, Result};
pub use model::Model;
