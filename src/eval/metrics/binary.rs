//! Metrics of predicted probabilities of a binary outcome (churn) against what happened.
//! `positive[i]` is the outcome the probability predicts (for churn: the customer churned).

use serde::Serialize;

use super::{mean, paired, rank, ratio};

/// Area under the ROC curve by the Mann–Whitney statistic: the probability that a random positive
/// is scored above a random negative, a tie counting one half (average ranks). NaN when either
/// class is absent — with a single class there is no pair to rank.
pub fn auc(probability: &[f64], positive: &[bool]) -> f64 {
    paired(probability, positive);
    let ranks = rank::average_ranks(probability);
    let positives = positive.iter().filter(|&&p| p).count() as f64;
    let negatives = positive.len() as f64 - positives;
    let positive_ranks: f64 = ranks.iter().zip(positive).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    ratio(positive_ranks - positives * (positives + 1.0) / 2.0, positives * negatives)
}

/// Brier score: mean of (probability − outcome)², outcome 1 for positive and 0 otherwise.
pub fn brier(probability: &[f64], positive: &[bool]) -> f64 {
    paired(probability, positive);
    mean(probability.iter().zip(positive).map(|(p, &y)| (p - f64::from(u8::from(y))).powi(2)))
}

/// Equal-width bins of the expected calibration error.
pub const CALIBRATION_BINS: usize = 10;

/// Expected calibration error: Σ_b (n_b / n)·|mean probability in b − positive rate in b| over
/// 10 equal-width bins [k/10, (k+1)/10), the last one closed at 1 (probabilities outside [0, 1]
/// fall in the nearest end bin). Empty bins contribute nothing.
pub fn expected_calibration_error(probability: &[f64], positive: &[bool]) -> f64 {
    paired(probability, positive);
    let last = (CALIBRATION_BINS - 1) as f64;
    // Per bin, Σ probability − Σ outcome: (n_b/n)·|mean p − mean y| = |Σp − Σy| / n.
    let mut gaps = [0.0; CALIBRATION_BINS];
    for (&p, &y) in probability.iter().zip(positive) {
        let bin = (p * CALIBRATION_BINS as f64).floor().clamp(0.0, last) as usize;
        gaps[bin] += p - f64::from(u8::from(y));
    }
    ratio(gaps.iter().map(|g| g.abs()).sum(), probability.len() as f64)
}

/// Classification metrics when probability ≥ `threshold` predicts positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdMetrics {
    pub threshold: f64,
    pub accuracy: f64,
    /// TP / (TP + FP); NaN when nothing is predicted positive.
    pub precision: f64,
    /// TP / (TP + FN); NaN when there are no positives.
    pub recall: f64,
    /// 2·TP / (2·TP + FP + FN), the harmonic mean of precision and recall (0 when TP = 0 but
    /// either is defined); NaN when there is nothing positive, predicted or actual.
    pub f1: f64,
}

impl ThresholdMetrics {
    fn new(threshold: f64, counts: Counts) -> ThresholdMetrics {
        let Counts { tp, fp, tn, fn_ } = counts;
        ThresholdMetrics {
            threshold,
            accuracy: ratio(tp + tn, tp + fp + tn + fn_),
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_),
        }
    }
}

/// A confusion table, as floats because every use divides.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    tp: f64,
    fp: f64,
    tn: f64,
    fn_: f64,
}

/// Accuracy, precision, recall and F1 when probability ≥ `threshold` predicts positive.
pub fn at_threshold(probability: &[f64], positive: &[bool], threshold: f64) -> ThresholdMetrics {
    paired(probability, positive);
    let mut counts = Counts::default();
    for (&p, &y) in probability.iter().zip(positive) {
        match (p >= threshold, y) {
            (true, true) => counts.tp += 1.0,
            (true, false) => counts.fp += 1.0,
            (false, false) => counts.tn += 1.0,
            (false, true) => counts.fn_ += 1.0,
        }
    }
    ThresholdMetrics::new(threshold, counts)
}

/// The threshold with the highest F1 among the distinct predicted probabilities (each used as
/// "probability ≥ it predicts positive"), and the metrics there; on equal F1 the highest such
/// threshold. Without positives F1 is nowhere defined: the threshold is then +∞ (nothing
/// predicted positive, F1 NaN).
pub fn best_f1(probability: &[f64], positive: &[bool]) -> ThresholdMetrics {
    paired(probability, positive);
    let positives = positive.iter().filter(|&&p| p).count() as f64;
    let none_predicted = Counts { tn: positive.len() as f64 - positives, fn_: positives, ..Counts::default() };
    let mut best = ThresholdMetrics::new(f64::INFINITY, none_predicted);
    let mut counts = none_predicted;
    let order = rank::ascending(probability);
    // Lower the threshold one run of equal probabilities at a time, highest first.
    for run in rank::tie_runs(probability, &order).rev() {
        let newly_positive = run.iter().filter(|&&i| positive[i]).count() as f64;
        let newly_negative = run.len() as f64 - newly_positive;
        counts.tp += newly_positive;
        counts.fn_ -= newly_positive;
        counts.fp += newly_negative;
        counts.tn -= newly_negative;
        let candidate = ThresholdMetrics::new(probability[run[0]], counts);
        if candidate.f1 > best.f1 {
            best = candidate;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: [f64; 4] = [0.1, 0.4, 0.35, 0.8];
    const Y: [bool; 4] = [false, false, true, true];

    #[test]
    fn auc_by_hand() {
        // Pairs (positive, negative): (.35, .1) ✓, (.35, .4) ✗, (.8, .1) ✓, (.8, .4) ✓.
        assert_eq!(auc(&P, &Y), 0.75);
        // Ties count one half: (.5, .2) ✓, (.5, .5) ½, (.9, .2) ✓, (.9, .5) ✓.
        assert_eq!(auc(&[0.2, 0.5, 0.5, 0.9], &[false, true, false, true]), 0.875);
        assert_eq!(auc(&[0.3; 4], &Y), 0.5);
    }

    #[test]
    fn auc_is_undefined_for_a_single_class() {
        assert!(auc(&P, &[true; 4]).is_nan());
        assert!(auc(&P, &[false; 4]).is_nan());
        assert!(auc(&[], &[]).is_nan());
    }

    #[test]
    fn brier_by_hand() {
        // .01 + .16 + .4225 + .04 = .6325
        assert!((brier(&P, &Y) - 0.6325 / 4.0).abs() < 1e-15);
        assert!(brier(&[], &[]).is_nan());
    }

    #[test]
    fn calibration_error_by_hand() {
        // Bin 0: .05 vs 0; bin 1: .15 vs 0; bin 9: (.95 + 1.0) vs 1 → |.95|. Sum 1.15 over 4.
        let e = expected_calibration_error(&[0.05, 0.15, 0.95, 1.0], &[false, false, true, false]);
        assert!((e - 1.15 / 4.0).abs() < 1e-15, "{e}");
        // Perfectly calibrated bins.
        assert_eq!(expected_calibration_error(&[0.5, 0.5], &[true, false]), 0.0);
        assert!(expected_calibration_error(&[], &[]).is_nan());
    }

    #[test]
    fn threshold_metrics_by_hand() {
        // ≥ .35 predicts positive: TP 2 (.35, .8), FP 1 (.4), TN 1, FN 0.
        let m = at_threshold(&P, &Y, 0.35);
        assert_eq!((m.accuracy, m.precision, m.recall), (0.75, 2.0 / 3.0, 1.0));
        assert_eq!(m.f1, 0.8);
        // Nothing predicted positive: precision undefined, F1 0.
        let m = at_threshold(&P, &Y, 0.9);
        assert!(m.precision.is_nan());
        assert_eq!((m.accuracy, m.recall, m.f1), (0.5, 0.0, 0.0));
    }

    #[test]
    fn best_f1_by_hand() {
        // Thresholds .8: F1 2/3; .4: 1/2; .35: .8; .1: 2/3. Best .35.
        let m = best_f1(&P, &Y);
        assert_eq!((m.threshold, m.f1), (0.35, 0.8));
        assert_eq!(m, at_threshold(&P, &Y, 0.35));
    }

    #[test]
    fn best_f1_prefers_the_higher_threshold_on_equal_f1() {
        // ≥ .9: TP 1, FN 1 → 2/3; ≥ .5: TP 2, FP 2 → 4/6 = 2/3 too.
        let m = best_f1(&[0.9, 0.5, 0.5, 0.5], &[true, true, false, false]);
        assert_eq!((m.threshold, m.f1), (0.9, 2.0 / 3.0));
    }

    #[test]
    fn best_f1_without_positives_predicts_nothing() {
        let m = best_f1(&P, &[false; 4]);
        assert_eq!((m.threshold, m.accuracy), (f64::INFINITY, 1.0));
        assert!(m.f1.is_nan());
    }
}
