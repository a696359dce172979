//! From a retailer's transaction log (and optional side data: attributes, events) to a trained
//! value-model file: eligible customers at the cutoff, a FeatureSpec fitted on them, labels from the horizon after the cutoff, the preset's
//! network trained on them, and everything needed to score later recorded in the file.

use std::collections::HashSet;

use serde_json::json;

use super::distill::soft_targets;
use super::{EpochReport, Targets, TrainData, TrainOptions, TrainOutcome, predict, refit, train};
use crate::data::attributes::Scale;
use crate::data::feature_spec::{FeatureSpec, LogShape, SideData, Window};
use crate::data::labels::{check_coverage, eligible, outcomes};
use crate::data::transactions::{Customer, Transactions};
use crate::engine::Epilogue;
use crate::error::{Error, Result};
use crate::model::graph::{Graph, HeadKind};
use crate::model::init::random_model;
use crate::model::preset::SEGMENTS;
use crate::model::tensor::{Tensor, TensorData, Weights};
use crate::model::{Model, ModelFile, Precision, Preset};

#[derive(Debug, Clone)]
pub struct LogTraining {
    /// The last day of the calibration period (inclusive), days since 1970-01-01.
    pub cutoff_day: i32,
    pub horizon_weeks: usize,
    pub churn_weeks: usize,
    /// Weeks of history in the sequence input.
    pub weeks: usize,
    pub preset: Preset,
    pub options: TrainOptions,
    /// How the log was read, recorded so that scoring reads logs the same way.
    pub log_shape: LogShape,
    /// After early stopping, train again on every customer for the chosen number of epochs.
    pub refit: bool,
    /// Customers never used for training, scaling statistics or early stopping.
    pub holdout: HashSet<String>,
    /// How numeric attributes are scaled (with side data that has attributes).
    pub scale: Scale,
}

pub struct Trained {
    pub file: ModelFile,
    pub outcome: TrainOutcome,
    /// Customers trained on (validation slice included).
    pub customers: usize,
    /// What the user should know about the side data (see [`crate::data::feature_spec::Featurizer::notes`]).
    pub notes: Vec<String>,
}

/// A trained model whose outputs a student learns from (see `distill`), and how much that counts
/// beside the labels.
#[derive(Debug, Clone, Copy)]
pub struct Distillation<'a> {
    pub teacher: &'a Model,
    pub weight: f64,
}

pub fn train_from_log(
    log: &Transactions,
    side: &SideData,
    cfg: &LogTraining,
    distillation: Option<Distillation>,
    progress: &mut dyn FnMut(&EpochReport),
) -> Result<Trained> {
    let data_start_day = log.first_day().ok_or_else(|| Error::Input("the log has no purchases".into()))?;
    check_coverage(log, cfg.cutoff_day, cfg.horizon_weeks, cfg.churn_weeks)?;
    let held_out = cfg.holdout.iter().filter(|id| log.position(id).is_some()).count();
    if !cfg.holdout.is_empty() && held_out == 0 {
        return Err(Error::Input(format!(
            "none of the {} holdout ids is a customer of the log (ids must match the log's text exactly)",
            cfg.holdout.len()
        )));
    }
    let customers: Vec<Customer> =
        eligible(log, cfg.cutoff_day).into_iter().filter(|c| !cfg.holdout.contains(c.id)).collect();
    if customers.len() < 2 {
        return Err(Error::Input(format!(
            "{} customers bought on or before the cutoff (after the holdout): too few to train on",
            customers.len()
        )));
    }
    let truth = outcomes(&customers, cfg.cutoff_day, cfg.horizon_weeks, cfg.churn_weeks);
    let window = Window {
        cutoff_day: cfg.cutoff_day,
        weeks: cfg.weeks,
        horizon_weeks: cfg.horizon_weeks,
        churn_weeks: cfg.churn_weeks,
        data_start_day,
    };
    let mut spec = FeatureSpec::fit(window, &customers, &truth.spend, SEGMENTS, side, cfg.scale)?;
    spec.log = Some(cfg.log_shape);
    let notes = spec.featurizer(side)?.notes(&customers);
    let mut data = labelled_data(&spec, side, &customers)?;
    if let Some(d) = distillation {
        data.targets.soft = Some(soft_targets(d.teacher, side, &customers, cfg.cutoff_day, SEGMENTS, d.weight)?);
    }
    let graph = cfg.preset.graph(spec.input_sizes());
    let init = random_model(graph.clone(), Precision::Fp32, cfg.options.seed, 0.0)?;
    let outcome = train(&graph, &init.weights, &data, &cfg.options, progress)?;
    let best = &outcome.history[outcome.best_epoch - 1];
    // Early stopping chose the epoch count on a validation slice; with it known, every customer can
    // train (the first pass's weights stay in `outcome` for comparison).
    let mut weights = if cfg.refit {
        refit(&graph, &init.weights, &data, &cfg.options, outcome.best_epoch, &mut |_, _| {})?
    } else {
        outcome.weights.clone()
    };
    let ltv_scale = calibrate_ltv_scale(&graph, &mut weights, &data)?;
    let mut file = ModelFile { weights, ..init };
    file.meta.feature_spec = serde_json::to_value(&spec).expect("specs serialize");
    file.meta.provenance = json!({
        "tool": concat!("ltvx ", env!("CARGO_PKG_VERSION")),
        "command": "train",
        "preset": cfg.preset.to_string(),
        "seed": cfg.options.seed,
        "threads": cfg.options.threads,
        "customers": customers.len(),
        "holdout_customers": held_out,
        "epochs": outcome.history.len(),
        "best_epoch": outcome.best_epoch,
        "refit_on_all_customers": cfg.refit,
        "teacher": distillation.map(|d| json!({"model": d.teacher.hash(), "distill_weight": d.weight})),
    });
    file.meta.metrics = json!({
        "ltv_scale": ltv_scale,
        "validation_loss": {
            "total": best.validation.total,
            "ltv": best.validation.ltv,
            "churn": best.validation.churn,
            "segment": best.validation.segment,
        }
    });
    Ok(Trained { file, outcome, customers: customers.len(), notes })
}

/// The customers' inputs by `spec` and their labels over its horizons: what a model with this spec
/// trains (or fine-tunes) on. Built by the same code from the same spec as when scoring, so that the
/// two agree bit for bit.
pub fn labelled_data(spec: &FeatureSpec, side: &SideData, customers: &[Customer]) -> Result<TrainData> {
    let truth = outcomes(customers, spec.cutoff_day()?, spec.horizon_weeks, spec.churn_weeks);
    Ok(TrainData {
        inputs: spec.featurizer(side)?.batch(customers)?,
        targets: Targets {
            spend: truth.spend.iter().map(|&s| s.max(0.0) as f32).collect(),
            churned: truth.churned.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect(),
            segment: truth.spend.iter().map(|&s| spec.segment_of(s)).collect(),
            soft: None,
        },
    })
}

/// Scales predicted LTV so that it sums to the actual spend over the training customers, folded into
/// the LTV head's mu bias (ltv = p·exp(mu + σ²/2), so ×c is mu + ln c): a lognormal fitted by
/// likelihood gets the ranking right but its mean is sensitive to the heavy tail of spend. Returns
/// the factor applied.
pub(crate) fn calibrate_ltv_scale(graph: &Graph, weights: &mut Weights, data: &TrainData) -> Result<f64> {
    let heads = predict(graph, weights, &data.inputs)?;
    let segments = graph.segments(&graph.check()?);
    let predicted: f64 = Epilogue::default().apply(&heads, segments).ltv.iter().map(|&v| v as f64).sum();
    let actual: f64 = data.targets.spend.iter().map(|&v| v as f64).sum();
    if !(predicted > 0.0 && actual > 0.0 && predicted.is_finite()) {
        return Ok(1.0);
    }
    let scale = actual / predicted;
    let bias = weights.get_mut(&format!("{}.bias", graph.head_dense(HeadKind::Ltv).name));
    if let Some(Tensor { data: TensorData::F32(b), .. }) = bias {
        b[1] += scale.ln() as f32;
    }
    Ok(scale)
}
