//! Training settings and their defaults.

use super::loss::LossWeights;
use super::optim::Masks;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// Upper bound on passes over the training customers (early stopping usually ends sooner).
    pub epochs: usize,
    /// Customers per optimizer step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay (not applied to biases).
    pub weight_decay: f64,
    pub loss_weights: LossWeights,
    /// Share of the given customers held out, by a seeded shuffle, to pick the best epoch.
    pub validation_fraction: f64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    /// Seeds the validation split and the per-epoch shuffles (initial weights come from the caller).
    pub seed: u64,
    /// Workers per mini-batch. Results are identical for the same seed and thread count.
    pub threads: usize,
    /// Pruned weights to hold at zero (see `masks_of_zero_weights`); empty = none.
    pub masks: Masks,
}

/// Sized for the `base` preset on about 12,000 customers within a minute on 2 cores (about 0.6–1.2 s
/// an epoch there, so 40 epochs at most), and for noisy real spend:
/// - 256 customers a step: each of 2 workers' GEMMs still spans 128·52 columns (efficient), and
///   ~40 steps an epoch are plenty for Adam;
/// - learning rate 1e-3, Adam's usual default: 2e-3 converged no better on the synthetic task and
///   made the validation loss noisier;
/// - weight decay 1e-4: a light pull on ~70k weights trained on ~10k customers; early stopping is
///   the main guard against overfitting;
/// - loss weights 1, 1, 1: all three are negative log-likelihoods per customer, so equal weights
///   are the neutral choice (the ZILN loss is larger mostly through its ln(spend) term, a constant
///   without gradient);
/// - 15 % validation (~1,800 customers) keeps the best-epoch choice stable; patience 5 epochs rides
///   out the ZILN loss's epoch-to-epoch noise;
/// - threads: the cores present (at most 8). Record the count with a model to reproduce it.
impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 40,
            batch_size: 256,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            loss_weights: LossWeights { ltv: 1.0, churn: 1.0, segment: 1.0 },
            validation_fraction: 0.15,
            patience: 5,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_DEFAULT_THREADS),
            masks: Masks::new(),
        }
    }
}

/// More workers than this would cut a default mini-batch into shards too small to keep a core busy.
const MAX_DEFAULT_THREADS: usize = 8;

impl TrainOptions {
    pub fn check(&self) -> Result<()> {
        let counts = [
            ("epochs", self.epochs),
            ("batch size", self.batch_size),
            ("patience", self.patience),
            ("threads", self.threads),
        ];
        if let Some((what, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Input(format!("{what} must be at least 1")));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Input(format!("learning rate {} must be finite and > 0", self.learning_rate)));
        }
        let w = &self.loss_weights;
        let non_negative = [
            ("weight decay", self.weight_decay),
            ("ltv loss weight", w.ltv),
            ("churn loss weight", w.churn),
            ("segment loss weight", w.segment),
        ];
        if let Some((what, v)) = non_negative.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::Input(format!("{what} {v} must be finite and ≥ 0")));
        }
        if w.ltv + w.churn + w.segment == 0.0 {
            return Err(Error::Input("all loss weights are 0: nothing to train".into()));
        }
        Ok(())
    }
}
