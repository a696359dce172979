//! A trained model judged on a transaction log: features as of the model's cutoff (its own
//! FeatureSpec), actual outcomes in its horizon, the model's metrics and, beside them, those of the
//! BG/NBD + Gamma-Gamma baseline fitted on the customers that are not evaluated.

use std::collections::HashSet;

use serde::Serialize;

use super::charts::{ChartInput, ChartModel, write_charts};
use super::report::{ChurnReport, LtvReport, Report};
use super::{Clv, Rfm};
use crate::data::feature_spec::{FeatureSpec, SideData};
use crate::data::labels::{check_coverage, eligible, outcomes};
use crate::data::transactions::{Customer, Transactions};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::Model;

/// The baseline's view of the same customers.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub name: &'static str,
    /// Customers the baseline was fitted on (calibration-period purchases only).
    pub fitted_on: usize,
    pub ltv: LtvReport,
    pub churn: ChurnReport,
}

/// Per-customer values behind the reports, in evaluation order (for charts).
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    pub actual_spend: Vec<f64>,
    pub churned: Vec<bool>,
    pub model_ltv: Vec<f64>,
    pub model_churn: Vec<f64>,
    pub baseline_ltv: Vec<f64>,
    pub baseline_churn: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub cutoff: String,
    pub horizon_weeks: usize,
    pub churn_weeks: usize,
    /// Listed customers that are not in the log or bought nothing by the cutoff.
    pub listed_but_not_eligible: usize,
    pub model: Report,
    /// `None` when it cannot be fitted (too few or degenerate customers); the notes say why.
    pub baseline: Option<BaselineReport>,
    #[serde(skip)]
    pub predictions: Predictions,
    /// What the user should know about the side data (see [`crate::data::feature_spec::Featurizer::notes`]).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Evaluation {
    /// Gain, decile, ROC and reliability charts of the model beside the baseline, into `dir`.
    pub fn write_charts(&self, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
        let p = &self.predictions;
        let mut models = vec![ChartModel { name: "ltvx", ltv: &p.model_ltv, churn_probability: &p.model_churn }];
        if let Some(b) = &self.baseline {
            models.push(ChartModel { name: b.name, ltv: &p.baseline_ltv, churn_probability: &p.baseline_churn });
        }
        let input = ChartInput { actual_spend: &p.actual_spend, churned: &p.churned, models };
        write_charts(dir, &input)
    }
}

/// The model's FeatureSpec, or why it has none usable.
pub fn feature_spec(model: &Model) -> Result<FeatureSpec> {
    let v = &model.meta.feature_spec;
    if v.as_object().is_some_and(|o| o.is_empty()) {
        return Err(Error::Input(format!(
            "{}: the model has no FeatureSpec (made by `ltvx init`?): it needs a model trained on transactions",
            model.origin()
        )));
    }
    let spec: FeatureSpec = serde_json::from_value(v.clone())
        .map_err(|e| Error::Input(format!("{}: feature_spec: {e}", model.origin())))?;
    spec.check()?;
    if spec.input_sizes() != model.graph().inputs {
        return Err(Error::Input(format!("{}: the FeatureSpec does not match the graph's inputs", model.origin())));
    }
    Ok(spec)
}

/// Evaluates on the customers in `only` (default: every customer who bought by the cutoff), with
/// the side data the model was trained with; the baseline is fitted on the eligible customers not
/// evaluated (all of them without a list: BG/NBD sees calibration purchases only, never outcomes).
pub fn evaluate(
    model: &Model,
    engine: &Engine,
    log: &Transactions,
    side: &SideData,
    only: Option<&HashSet<String>>,
) -> Result<Evaluation> {
    let spec = feature_spec(model)?;
    let featurizer = spec.featurizer(side)?;
    let cutoff = spec.cutoff_day()?;
    check_coverage(log, cutoff, spec.horizon_weeks, spec.churn_weeks)?;
    let all = eligible(log, cutoff);
    let (evaluated, rest): (Vec<Customer>, Vec<Customer>) = match only {
        Some(ids) => all.iter().copied().partition(|c| ids.contains(c.id)),
        None => (all.clone(), Vec::new()),
    };
    if evaluated.is_empty() {
        return Err(Error::Input("no customer to evaluate bought anything on or before the model's cutoff".into()));
    }
    let listed_but_not_eligible = only.map_or(0, |ids| ids.len() - evaluated.len());
    let truth = outcomes(&evaluated, cutoff, spec.horizon_weeks, spec.churn_weeks);
    let scores = engine.score(&featurizer.batch(&evaluated)?)?;
    let mut p = Predictions {
        actual_spend: truth.spend.clone(),
        churned: truth.churned.clone(),
        model_ltv: scores.ltv.iter().map(|&v| v as f64).collect(),
        model_churn: scores.churn_probability.iter().map(|&v| v as f64).collect(),
        ..Default::default()
    };
    let actual_segment: Vec<u32> = truth.spend.iter().map(|&s| spec.segment_of(s)).collect();
    let model =
        Report::new(&p.model_ltv, &p.actual_spend, &p.model_churn, &p.churned, &scores.segment, &actual_segment);
    let mut notes = featurizer.notes(&evaluated);
    let fit_on = if rest.is_empty() {
        notes.push("no customer is left out of the evaluation: the baseline is fitted on the evaluated ones".into());
        &all
    } else {
        &rest
    };
    let baseline = match Clv::fit(&rfm_of(fit_on, cutoff)) {
        Ok(clv) => {
            for r in rfm_of(&evaluated, cutoff) {
                p.baseline_ltv.push(clv.predict(&r, spec.horizon_weeks as f64).spend);
                p.baseline_churn.push(clv.predict(&r, spec.churn_weeks as f64).p_no_purchase);
            }
            Some(BaselineReport {
                name: "BG/NBD + Gamma-Gamma",
                fitted_on: fit_on.len(),
                ltv: LtvReport::new(&p.baseline_ltv, &p.actual_spend),
                churn: ChurnReport::new(&p.baseline_churn, &p.churned),
            })
        }
        // The model's metrics stand on their own; a baseline that cannot be fitted is reported.
        Err(e) => {
            notes.push(format!("no BG/NBD baseline: {e}"));
            None
        }
    };
    Ok(Evaluation {
        cutoff: spec.cutoff.clone(),
        horizon_weeks: spec.horizon_weeks,
        churn_weeks: spec.churn_weeks,
        listed_but_not_eligible,
        model,
        baseline,
        predictions: p,
        notes,
    })
}

/// Calibration-period summaries (customers are eligible, so each has one).
fn rfm_of(customers: &[Customer<'_>], cutoff: i32) -> Vec<Rfm> {
    customers
        .iter()
        .filter_map(|c| {
            let purchases: Vec<(i32, f64)> = c.purchases.iter().map(|o| (o.day, o.amount)).collect();
            Rfm::from_purchases(&purchases, cutoff)
        })
        .collect()
}
