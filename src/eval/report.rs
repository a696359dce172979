//! An evaluation report: every metric of [`metrics`](super::metrics) for one set of predictions,
//! grouped by what is predicted, ready to print or serialise (undefined values become `null`).

use serde::Serialize;

use super::metrics::binary::{self, ThresholdMetrics};
use super::metrics::ltv::{self, Decile};
use super::metrics::multiclass;

/// The fraction of top-ranked customers in [`LtvReport::top10_share`].
const TOP_FRACTION: f64 = 0.1;
/// The conventional churn decision threshold reported beside the F1-best one.
const DEFAULT_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub customers: usize,
    pub ltv: LtvReport,
    pub churn: ChurnReport,
    pub segment: SegmentReport,
}

/// Predicted lifetime value against actual spend in the horizon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LtvReport {
    pub normalized_gini: f64,
    pub spearman: f64,
    pub decile_mape: f64,
    pub mae: f64,
    pub rmse: f64,
    /// Σ predicted / Σ actual.
    pub total_ratio: f64,
    pub top10_share: f64,
    /// Lowest predictions first.
    pub deciles: Vec<Decile>,
}

/// Predicted churn probability against whether the customer churned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChurnReport {
    pub auc: f64,
    pub brier: f64,
    pub expected_calibration_error: f64,
    /// At probability ≥ 0.5.
    pub at_half: ThresholdMetrics,
    /// At the threshold with the best F1.
    pub best_f1: ThresholdMetrics,
}

/// Predicted value segment against the actual one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// `confusion[actual][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl Report {
    /// # Panics
    /// When the slices differ in length.
    pub fn new(
        predicted_ltv: &[f64],
        actual_spend: &[f64],
        churn_probability: &[f64],
        churned: &[bool],
        predicted_segment: &[u32],
        actual_segment: &[u32],
    ) -> Report {
        let customers = predicted_ltv.len();
        assert!(
            [actual_spend.len(), churn_probability.len(), churned.len(), predicted_segment.len(), actual_segment.len()]
                .iter()
                .all(|&n| n == customers),
            "every prediction and outcome slice must have one entry per customer"
        );
        Report {
            customers,
            ltv: LtvReport::new(predicted_ltv, actual_spend),
            churn: ChurnReport::new(churn_probability, churned),
            segment: SegmentReport::new(predicted_segment, actual_segment),
        }
    }
}

impl LtvReport {
    pub fn new(predicted: &[f64], actual: &[f64]) -> LtvReport {
        LtvReport {
            normalized_gini: ltv::normalized_gini(predicted, actual),
            spearman: ltv::spearman(predicted, actual),
            decile_mape: ltv::decile_mape(predicted, actual),
            mae: ltv::mae(predicted, actual),
            rmse: ltv::rmse(predicted, actual),
            total_ratio: ltv::total_ratio(predicted, actual),
            top10_share: ltv::top_share(predicted, actual, TOP_FRACTION),
            deciles: ltv::deciles(predicted, actual),
        }
    }
}

impl ChurnReport {
    pub fn new(probability: &[f64], churned: &[bool]) -> ChurnReport {
        ChurnReport {
            auc: binary::auc(probability, churned),
            brier: binary::brier(probability, churned),
            expected_calibration_error: binary::expected_calibration_error(probability, churned),
            at_half: binary::at_threshold(probability, churned, DEFAULT_THRESHOLD),
            best_f1: binary::best_f1(probability, churned),
        }
    }
}

impl SegmentReport {
    pub fn new(predicted: &[u32], actual: &[u32]) -> SegmentReport {
        SegmentReport {
            accuracy: multiclass::accuracy(predicted, actual),
            macro_f1: multiclass::macro_f1(predicted, actual),
            confusion: multiclass::confusion_matrix(predicted, actual),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_the_metrics_and_serializes_undefined_as_null() {
        let report = Report::new(
            &[3.0, 1.0, 2.0],
            &[30.0, 0.0, 10.0],
            &[0.1, 0.9, 0.4],
            &[false, true, true],
            &[1, 0, 1],
            &[1, 0, 0],
        );
        assert_eq!(report.customers, 3);
        assert_eq!(report.ltv.normalized_gini, 1.0);
        assert_eq!(report.ltv.spearman, 1.0);
        assert_eq!(report.churn.auc, 1.0);
        assert_eq!(report.segment.accuracy, 2.0 / 3.0);
        assert_eq!(report.ltv.deciles.len(), 3);
        // One customer per decile, the lowest with actual 0: MAPE over the other two.
        assert_eq!(report.ltv.decile_mape, (8.0 / 10.0 + 27.0 / 30.0) / 2.0);

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["churn"]["best_f1"]["threshold"], 0.4);
        assert_eq!(json["segment"]["confusion"], serde_json::json!([[1, 1], [0, 1]]));

        let single_class = ChurnReport::new(&[0.2, 0.3], &[true, true]);
        assert!(single_class.auc.is_nan());
        assert!(serde_json::to_value(single_class).unwrap()["auc"].is_null());
    }

    #[test]
    #[should_panic(expected = "one entry per customer")]
    fn mismatched_lengths_panic() {
        Report::new(&[1.0], &[1.0], &[0.5], &[true], &[0], &[]);
    }
}
