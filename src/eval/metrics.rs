//! Metrics of predictions against outcomes: pure functions over slices, one value each.
//!
//! Conventions shared by every function here:
//! - a metric that is undefined for its input (no customers, no variance, a single class, a zero
//!   denominator) is NaN — never a made-up 0 or 1 — and serialises as JSON `null`;
//! - the paired slices (prediction, outcome) must have equal lengths: a mismatch is a programming
//!   error and panics;
//! - values are expected finite; ranks and orderings use `f64::total_cmp`, so a NaN prediction
//!   ranks above (or, negative, below) every number instead of panicking.

pub mod binary;
pub mod ltv;
pub mod multiclass;
mod rank;

/// Panics unless paired slices have equal lengths (see the module conventions).
fn paired<A, B>(predicted: &[A], actual: &[B]) {
    assert_eq!(predicted.len(), actual.len(), "predictions and outcomes must pair up");
}

/// `numerator / denominator`, NaN when the denominator is 0 (the module's convention for an
/// undefined metric, where plain division would give ±∞ for x/0).
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 { f64::NAN } else { numerator / denominator }
}

/// Arithmetic mean; NaN when empty.
fn mean(values: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = values.len();
    values.sum::<f64>() / n as f64
}
