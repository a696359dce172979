//! Metrics of predicted lifetime value against actual spend, as defined by Google's
//! `lifetime_value` code (Wang et al. 2019, "A Deep Probabilistic Model for Customer Lifetime
//! Value Prediction") where it defines them.
//!
//! Ties in the prediction. Rank-order metrics (Gini, decile MAPE, top share) order customers by
//! prediction, and a ranking says nothing about the order of customers it predicts equally. So
//! within each run of equal predictions every customer's actual spend is replaced by the run's
//! mean: the metric then equals its expectation over all orders of the tied customers (each is
//! linear in the spend at each position), is independent of input order, and a constant
//! prediction earns no credit. Spearman uses average ranks, the same idea for ranks.
//!
//! Actual spend is expected to be ≥ 0.

use serde::Serialize;

use super::{mean, paired, rank, ratio};

/// Customers ordered by prediction, smallest first, as (prediction, actual spend with ties
/// averaged — see the module notes).
pub(crate) fn by_prediction(predicted: &[f64], actual: &[f64]) -> Vec<(f64, f64)> {
    paired(predicted, actual);
    let order = rank::ascending(predicted);
    let mut pairs = Vec::with_capacity(order.len());
    for run in rank::tie_runs(predicted, &order) {
        let run_mean = mean(run.iter().map(|&i| actual[i]));
        pairs.extend(run.iter().map(|&i| (predicted[i], run_mean)));
    }
    pairs
}

/// Google's raw Gini of spends taken highest-ranked first: 2·mean_k(C_k / S) − 1, where C_k is the
/// spend of the first k customers and S the total — twice the area under the discrete gain curve
/// above the diagonal.
fn raw_gini(highest_first: impl Iterator<Item = f64>) -> f64 {
    let (mut n, mut cumulative, mut area) = (0.0, 0.0, 0.0);
    for spend in highest_first {
        n += 1.0;
        cumulative += spend;
        area += cumulative;
    }
    2.0 * ratio(area, cumulative * n) - 1.0
}

/// Normalised Gini: the raw Gini of actual spend ordered by prediction (ties averaged) divided by
/// the raw Gini of the perfect ordering (by actual spend itself). 1 for a perfect ranking, about 0
/// for a random one (a constant prediction scores 1/(n·perfect raw Gini): the discrete formula's
/// offset), negative for an inverted one. NaN when all actual spends are equal (including all
/// 0): then no ranking is better than another, yet the discrete formula would score every one 1.
pub fn normalized_gini(predicted: &[f64], actual: &[f64]) -> f64 {
    let ordered = by_prediction(predicted, actual);
    if actual.iter().all(|&a| a == actual[0]) {
        return f64::NAN;
    }
    let mut perfect = actual.to_vec();
    perfect.sort_by(f64::total_cmp);
    ratio(raw_gini(ordered.iter().rev().map(|&(_, a)| a)), raw_gini(perfect.into_iter().rev()))
}

/// Spearman rank correlation: the Pearson correlation of the average ranks (ties share the mean
/// of the ranks they span). NaN with fewer than two customers or when either side is constant.
pub fn spearman(predicted: &[f64], actual: &[f64]) -> f64 {
    paired(predicted, actual);
    pearson(&rank::average_ranks(predicted), &rank::average_ranks(actual))
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let (mx, my) = (mean(x.iter().copied()), mean(y.iter().copied()));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().map(|a| a - mx).zip(y.iter().map(|b| b - my)) {
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    ratio(sxy, (sxx * syy).sqrt())
}

/// Number of prediction quantile groups in the decile table.
pub const DECILES: usize = 10;

/// One group of customers with similar predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Decile {
    pub customers: usize,
    pub predicted_mean: f64,
    /// Mean actual spend, ties in the prediction averaged (see the module notes).
    pub actual_mean: f64,
}

/// Customers sorted by prediction, smallest first, cut into 10 equal-count groups: decile d holds
/// sorted positions ⌊d·n/10⌋ ..< ⌊(d+1)·n/10⌋ (sizes differ by at most one). Lowest predictions
/// first, as Google's `pd.qcut` labels them. Empty deciles (n < 10) are left out.
pub fn deciles(predicted: &[f64], actual: &[f64]) -> Vec<Decile> {
    let ordered = by_prediction(predicted, actual);
    let n = ordered.len();
    (0..DECILES)
        .map(|d| &ordered[d * n / DECILES..(d + 1) * n / DECILES])
        .filter(|group| !group.is_empty())
        .map(|group| Decile {
            customers: group.len(),
            predicted_mean: mean(group.iter().map(|&(p, _)| p)),
            actual_mean: mean(group.iter().map(|&(_, a)| a)),
        })
        .collect()
}

/// Decile MAPE: the mean over [`deciles`] of |predicted mean − actual mean| / actual mean.
/// A decile whose actual mean is 0 has no percentage error and is left out of the mean (Google's
/// code would return +∞; the decile table shows such deciles). NaN when no decile remains.
pub fn decile_mape(predicted: &[f64], actual: &[f64]) -> f64 {
    let errors: Vec<f64> = deciles(predicted, actual)
        .iter()
        .filter(|d| d.actual_mean != 0.0)
        .map(|d| ((d.predicted_mean - d.actual_mean) / d.actual_mean).abs())
        .collect();
    mean(errors.into_iter())
}

/// Mean absolute error.
pub fn mae(predicted: &[f64], actual: &[f64]) -> f64 {
    paired(predicted, actual);
    mean(predicted.iter().zip(actual).map(|(p, a)| (p - a).abs()))
}

/// Root mean squared error.
pub fn rmse(predicted: &[f64], actual: &[f64]) -> f64 {
    paired(predicted, actual);
    mean(predicted.iter().zip(actual).map(|(p, a)| (p - a).powi(2))).sqrt()
}

/// Σ predicted / Σ actual: 1 when the total is right, whatever the ranking. NaN when Σ actual = 0.
pub fn total_ratio(predicted: &[f64], actual: &[f64]) -> f64 {
    paired(predicted, actual);
    ratio(predicted.iter().sum(), actual.iter().sum())
}

/// Share of the total actual spend held by the `fraction` of customers with the highest
/// predictions (ties averaged): the gain curve at k = fraction·n customers, interpolated linearly
/// between whole customers so that it is exact for any n (0.1 gives the "top-10% share").
/// NaN when Σ actual = 0.
///
/// # Panics
/// When `fraction` is outside [0, 1].
pub fn top_share(predicted: &[f64], actual: &[f64], fraction: f64) -> f64 {
    assert!((0.0..=1.0).contains(&fraction), "top_share: fraction {fraction} outside [0, 1]");
    let ordered = by_prediction(predicted, actual);
    let k = fraction * ordered.len() as f64;
    let whole = k.floor() as usize;
    let mut highest_first = ordered.iter().rev().map(|&(_, a)| a);
    let mut top: f64 = highest_first.by_ref().take(whole).sum();
    top += highest_first.next().map_or(0.0, |next| (k - whole as f64) * next);
    ratio(top, actual.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTUAL: [f64; 4] = [10.0, 0.0, 30.0, 60.0];

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() < 1e-12
    }

    #[test]
    fn gini_by_hand() {
        // Perfect order 60, 30, 10, 0: shares .6 .9 1 1, mean .875, raw .75.
        assert!(close(normalized_gini(&[0.0, -1.0, 5.0, 9.0], &ACTUAL), 1.0));
        // Order 10, 0, 30, 60: shares .1 .1 .4 1, mean .4, raw −.2.
        assert!(close(normalized_gini(&[4.0, 3.0, 2.0, 1.0], &ACTUAL), -0.2 / 0.75));
    }

    #[test]
    fn gini_averages_tied_predictions() {
        // Runs {10, 0} and {30, 60} become 5, 5, 45, 45: shares .05 .1 .55 1, mean .425, raw −.15.
        assert!(close(normalized_gini(&[2.0, 2.0, 1.0, 1.0], &ACTUAL), -0.15 / 0.75));
        // A constant prediction: shares .25 .5 .75 1, raw 1/n = .25.
        assert!(close(normalized_gini(&[3.0; 4], &ACTUAL), 0.25 / 0.75));
    }

    #[test]
    fn gini_is_undefined_without_spread_in_spend() {
        assert!(normalized_gini(&[1.0, 2.0], &[0.0, 0.0]).is_nan());
        assert!(normalized_gini(&[1.0, 2.0], &[5.0, 5.0]).is_nan());
        assert!(normalized_gini(&[], &[]).is_nan());
    }

    #[test]
    fn spearman_by_hand() {
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0));
        assert!(close(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0));
        // Ranks (1.5, 1.5, 3) vs (1, 2, 3): deviations (−.5, −.5, 1) · (−1, 0, 1) = 1.5;
        // √(1.5 · 2) = √3.
        assert!(close(spearman(&[0.0, 0.0, 1.0], &[1.0, 2.0, 3.0]), 1.5 / 3f64.sqrt()));
        assert!(spearman(&[1.0; 3], &[1.0, 2.0, 3.0]).is_nan());
        assert!(spearman(&[1.0], &[1.0]).is_nan());
    }

    #[test]
    fn deciles_split_evenly_lowest_first() {
        // 12 customers: sizes ⌊(d+1)·1.2⌋ − ⌊d·1.2⌋ = 1,1,1,1,2,1,1,1,1,2.
        let predicted: Vec<f64> = (0..12).map(f64::from).collect();
        let actual: Vec<f64> = predicted.iter().map(|p| 2.0 * p).collect();
        let d = deciles(&predicted, &actual);
        let sizes: Vec<usize> = d.iter().map(|d| d.customers).collect();
        assert_eq!(sizes, [1, 1, 1, 1, 2, 1, 1, 1, 1, 2]);
        assert_eq!((d[4].predicted_mean, d[4].actual_mean), (4.5, 9.0));
        assert_eq!((d[9].predicted_mean, d[9].actual_mean), (10.5, 21.0));
        // Every decile predicts half its actual mean, except the first (actual 0, left out).
        assert!(close(decile_mape(&predicted, &actual), 0.5));
    }

    #[test]
    fn deciles_average_ties_across_boundaries() {
        // Ten customers, all predicted equal: each decile's actual mean is the overall mean.
        let actual: Vec<f64> = (0..10).map(f64::from).collect();
        let d = deciles(&[1.0; 10], &actual);
        assert!(d.iter().all(|d| d.customers == 1 && d.actual_mean == 4.5));
        assert!(close(decile_mape(&[1.0; 10], &actual), 3.5 / 4.5));
    }

    #[test]
    fn decile_mape_degenerate_inputs() {
        assert_eq!(deciles(&[1.0, 2.0, 3.0], &[1.0, 1.0, 1.0]).len(), 3);
        assert!(decile_mape(&[1.0; 20], &[0.0; 20]).is_nan());
        assert!(decile_mape(&[], &[]).is_nan());
    }

    #[test]
    fn errors_and_totals_by_hand() {
        let (p, a) = ([1.0, 2.0, 4.0], [2.0, 2.0, 1.0]);
        assert!(close(mae(&p, &a), 4.0 / 3.0));
        assert!(close(rmse(&p, &a), (10.0f64 / 3.0).sqrt()));
        assert!(close(total_ratio(&p, &a), 7.0 / 5.0));
        assert!(total_ratio(&[1.0], &[0.0]).is_nan());
        assert!(mae(&[], &[]).is_nan());
    }

    #[test]
    fn top_share_interpolates_and_averages_ties() {
        let predicted = [4.0, 3.0, 2.0, 1.0];
        assert!(close(top_share(&predicted, &ACTUAL, 0.5), 0.1));
        // k = 0.4 customers: 0.4 of the first customer's 10.
        assert!(close(top_share(&predicted, &ACTUAL, 0.1), 0.04));
        assert!(close(top_share(&predicted, &ACTUAL, 1.0), 1.0));
        assert!(close(top_share(&predicted, &ACTUAL, 0.0), 0.0));
        // Ties {10, 0} → 5, 5.
        assert!(close(top_share(&[2.0, 2.0, 1.0, 1.0], &ACTUAL, 0.25), 0.05));
        assert!(top_share(&[1.0], &[0.0], 0.1).is_nan());
    }

    #[test]
    #[should_panic(expected = "must pair up")]
    fn mismatched_lengths_panic() {
        mae(&[1.0], &[1.0, 2.0]);
    }
}
