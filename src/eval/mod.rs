//! Evaluation: how well predicted LTV, churn and segment match what customers then did
//! ([`metrics`], [`Report`]), and the classical probabilistic baseline a value model must beat —
//! BG/NBD for the number of purchases with Gamma-Gamma for their value ([`Clv`]).
//!
//! The baseline works on per-customer summaries ([`Rfm`]) of a calibration period and predicts a
//! horizon of N weeks after it.

pub mod bgnbd;
pub mod charts;
pub mod clv;
pub mod evaluate;
pub mod gamma_gamma;
mod hypergeometric;
pub mod metrics;
mod mle;
mod nelder_mead;
pub mod report;
pub mod rfm;

pub use bgnbd::BgNbd;
pub use clv::{Clv, ClvPrediction};
pub use gamma_gamma::GammaGamma;
pub use mle::Fit;
pub use report::Report;
pub use rfm::Rfm;
