//! Pruning with fine-tuning: prune a trained float model in steps towards its target sparsity, and
//! after each step train the surviving weights for a few epochs (pruned weights held at zero by the
//! optimizer's masks), so that the network recovers what each cut took.

use super::from_log::calibrate_ltv_scale;
use super::{TrainData, TrainOptions, masks_of_zero_weights, refit};
use crate::error::{Error, Result};
use crate::model::ModelFile;
use crate::model::prune::{Pattern, PruneReport, prune, schedule};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneSchedule {
    pub pattern: Pattern,
    /// Final share of each prunable layer's weights (or channels) removed, in [0, 1).
    pub sparsity: f64,
    /// Pruning steps (cubic schedule); more than one needs fine-tuning between them.
    pub steps: usize,
    /// Epochs of fine-tuning after each step; 0 = prune only.
    pub epochs: usize,
}

/// Prunes `file` by `plan`, fine-tuning on `data` after each step. `progress` gets (step, epoch,
/// mean training loss). Returns what the last step pruned.
pub fn prune_and_fine_tune(
    file: &mut ModelFile,
    plan: &PruneSchedule,
    data: Option<&TrainData>,
    opts: &TrainOptions,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<PruneReport> {
    if plan.steps == 0 {
        return Err(Error::Input("pruning steps must be at least 1".into()));
    }
    if plan.steps > 1 && plan.epochs == 0 {
        return Err(Error::Input("several pruning steps need fine-tuning between them (--fine-tune-epochs N)".into()));
    }
    if plan.steps > 1 && matches!(plan.pattern, Pattern::Channel | Pattern::TwoFour) {
        return Err(Error::Input(format!("{} pruning is done in one step (drop --prune-steps)", plan.pattern)));
    }
    let data = match (data, plan.epochs) {
        (None, 0) => None,
        (None, _) => {
            return Err(Error::Input("fine-tuning needs the training log: --transactions FILE".into()));
        }
        (Some(d), _) => Some(d),
    };
    let mut report = None;
    for step in 1..=plan.steps {
        let target = if step == plan.steps { plan.sparsity } else { schedule(plan.sparsity, step, plan.steps) };
        report = Some(prune(file, plan.pattern, target)?);
        if let Some(data) = data {
            let opts = TrainOptions { masks: masks_of_zero_weights(&file.weights), ..opts.clone() };
            let graph = file.meta.graph.clone();
            file.weights = refit(&graph, &file.weights, data, &opts, plan.epochs, &mut |e, l| progress(step, e, l))?;
            // Fine-tuning moves the LTV head's mean: scale it to the training customers' spend again,
            // as training does.
            calibrate_ltv_scale(&graph, &mut file.weights, data)?;
        }
    }
    Ok(report.expect("at least one step"))
}
