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
    /// Decay of the running average of the weights (Polyak–Ruppert averaging) that is validated and
    /// kept instead of the last step's weights; 0 = no averaging.
    pub weight_averaging: f64,
}

/// Sized for the `base` preset on about 12,000 customers within a minute on 2 cores (about 0.3–0.6 s
/// an epoch there, so 40 epochs at most), and chosen on CDNOW's five reference splits
/// (docs/ACCURACY.md) among a handful of settings — the same defaults serve any retailer's log:
/// - 256 customers a step: each of 2 workers' GEMMs still spans 128·52 columns (efficient), and
///   ~40 steps an epoch are plenty for Adam;
/// - learning rate 5e-4 and weight decay 1e-2 (none on biases): the ZILN head overfits the few
///   heaviest spenders within a few epochs at Adam's usual 1e-3 and 1e-4;
/// - the weights kept are a running average (decay 0.995, about the last 200 steps), validated each
///   epoch: it smooths the epoch-to-epoch noise of the ZILN loss, which made the best-epoch choice and
///   the top decile's predictions erratic;
/// - loss weights 1, 1, 1: all three are negative log-likelihoods per customer, so equal weights
///   are the neutral choice (the ZILN loss is larger mostly through its ln(spend) term, a constant
///   without gradient);
/// - 10 % validation (~1,200 customers) to choose the best epoch, patience 10 epochs;
/// - threads: the cores present (at most 8). Record the count with a model to reproduce it.
impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 40,
            batch_size: 256,
            learning_rate: 5e-4,
            weight_decay: 1e-2,
            loss_weights: LossWeights { ltv: 1.0, churn: 1.0, segment: 1.0 },
            validation_fraction: 0.1,
            patience: 10,
            seed: 0,
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(MAX_DEFAULT_THREADS),
            masks: Masks::new(),
            weight_averaging: 0.995,
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
        if !(0.0..1.0).contains(&self.weight_averaging) {
            return Err(Error::Input(format!("weight averaging {} must be in [0, 1)", self.weight_averaging)));
        }
        if w.ltv + w.churn + w.segment == 0.0 {
            return Err(Error::Input("all loss weights are 0: nothing to train".into()));
        }
        Ok(())
    }
}
