//! `ltvx compress`: a float model pruned (optionally with fine-tuning) and/or converted to int8
//! (calibrated on real customers) or fp16.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use ltvx::data::labels::eligible;
use ltvx::data::synthetic;
use ltvx::data::transactions::Transactions;
use ltvx::eval::evaluate::feature_spec;
use ltvx::model::calibrate::{Method, observe};
use ltvx::model::prune::{Pattern, PruneReport};
use ltvx::model::quant_report::{LayerError, quantization_report};
use ltvx::model::quantize::{Int8Options, to_fp16, to_int8};
use ltvx::model::{Model, ModelFile, Precision};
use ltvx::train::TrainOptions;
use ltvx::train::fine_tune::{PruneSchedule, prune_and_fine_tune};
use ltvx::train::from_log::labelled_data;
use ltvx::{Error, Result};
use serde_json::json;

use super::eval::read_ids;
use super::init::parse_precision;
use super::log;
use super::log_args::LogArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The float model to compress.
    model: PathBuf,
    /// int8 or fp16 (leave out to prune only, keeping fp32).
    #[arg(long, value_parser = parse_precision)]
    to: Option<Precision>,
    /// The customers' log: calibration customers (int8) and fine-tuning data, by the model's
    /// FeatureSpec at its cutoff.
    #[command(flatten)]
    log: LogArgs,
    /// Customers (one id per line) kept out of calibration and fine-tuning: the evaluation's.
    #[arg(long)]
    holdout_customers: Option<PathBuf>,
    /// Prune this share of each prunable layer's weights (or channels) by magnitude, in [0, 1).
    #[arg(long)]
    prune: Option<f64>,
    /// unstructured, block:RxC (R output channels × C reduction weights), channel or 2:4.
    #[arg(long, default_value = "unstructured", requires = "prune")]
    prune_pattern: Pattern,
    /// Prune in this many steps (cubic schedule), fine-tuning after each.
    #[arg(long, default_value_t = 1, requires = "prune")]
    prune_steps: usize,
    /// Epochs of fine-tuning on the log after each pruning step (pruned weights stay zero).
    #[arg(long, default_value_t = 0, requires = "prune")]
    fine_tune_epochs: usize,
    /// Fine-tuning threads (results are reproducible for a given seed and thread count).
    #[arg(long)]
    threads: Option<usize>,
    /// Seeds the fine-tuning's shuffles.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Calibrate on synthetic customers instead (models made by `ltvx init`).
    #[arg(long, conflicts_with = "transactions")]
    synthetic_calibration: bool,
    /// minmax or percentile:P (e.g. percentile:99.9).
    #[arg(long, default_value_t = Method::DEFAULT)]
    calibration: Method,
    /// At most this many calibration customers (evenly spread over the log).
    #[arg(long, default_value_t = 2000)]
    calibration_customers: usize,
    /// Keep the heads in f32 (run on the dequantized input) instead of int8.
    #[arg(long)]
    f32_heads: bool,
    /// Per layer (int8): scale, range, clipped share and error against fp32 on the calibration customers.
    #[arg(long)]
    report: bool,
    /// The compressed model file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = Model::open(&a.model)?;
    if model.precision() == Precision::Int8 {
        return Err(Error::Input(format!("{}: the model is already int8", a.model.display())));
    }
    if a.to == Some(Precision::Fp32) {
        return Err(Error::Input("--to fp32: nothing to compress (expected int8 or fp16)".into()));
    }
    if a.to.is_none() && a.prune.is_none() {
        return Err(Error::Input("nothing to do: give --to int8|fp16, --prune SPARSITY, or both".into()));
    }
    let log_data = a.log.load()?;
    let holdout = a.holdout_customers.as_deref().map(read_ids).transpose()?.unwrap_or_default();
    let mut file = model.to_model_file();
    if let Some(sparsity) = a.prune {
        let report = prune_step(&model, &mut file, &a, log_data.as_ref(), &holdout, sparsity)?;
        super::with_stdout(|w| write_prune_report(w, &report))?;
        file.meta.provenance["pruned"] = json!({
            "pattern": a.prune_pattern.to_string(),
            "sparsity": sparsity,
            "steps": a.prune_steps,
            "fine_tune_epochs": a.fine_tune_epochs,
            "sparsity_over_prunable_layers": report.prunable_sparsity(),
            "sparsity_over_model": report.model_sparsity(),
        });
    }
    let to = a.to.unwrap_or(Precision::Fp32);
    if a.report && to != Precision::Int8 {
        return Err(Error::Input("--report describes int8 calibration: it needs --to int8".into()));
    }
    let mut file = match to {
        Precision::Int8 => {
            let float = file.clone().into_model()?;
            let (batch, source) = calibration_batch(&float, &a, log_data.as_ref(), &holdout)?;
            let ranges = observe(&float, &batch, a.calibration)?;
            let calibration = format!("{} over {} customers ({source})", a.calibration, batch.len());
            let int8 = to_int8(&file, &ranges, &Int8Options { f32_heads: a.f32_heads, calibration })?;
            if a.report {
                let errors = quantization_report(&float, &int8.clone().into_model()?, &batch)?;
                super::with_stdout(|w| write_quantization_report(w, &errors))?;
            }
            int8
        }
        Precision::Fp16 => to_fp16(&file),
        Precision::Fp32 => file,
    };
    file.meta.provenance["compressed"] = json!({"from": model.hash(), "to": to.to_string(), "f32_heads": a.f32_heads});
    let written = file.save(&a.out)?;
    let tensor_bytes = |m: &Model| m.tensor_bytes();
    log::info(&format!(
        "wrote {}: {} → {}, tensors {} → {} bytes",
        a.out.display(),
        model.precision(),
        written.precision(),
        tensor_bytes(&model),
        tensor_bytes(&written)
    ));
    Ok(ExitCode::SUCCESS)
}

/// Prunes `file` (the float `model`'s tensors) as the arguments say, fine-tuning on the log's
/// customers outside the holdout.
fn prune_step(
    model: &Model,
    file: &mut ModelFile,
    a: &Args,
    log_data: Option<&Transactions>,
    holdout: &HashSet<String>,
    sparsity: f64,
) -> Result<PruneReport> {
    let plan = PruneSchedule { pattern: a.prune_pattern, sparsity, steps: a.prune_steps, epochs: a.fine_tune_epochs };
    let data = match (a.fine_tune_epochs, log_data) {
        (0, _) | (_, None) => None,
        (_, Some(log_data)) => {
            let spec = feature_spec(model)?;
            spec.check_log(&a.log.shape(log_data))?;
            let customers: Vec<_> =
                eligible(log_data, spec.cutoff_day()?).into_iter().filter(|c| !holdout.contains(c.id)).collect();
            Some(labelled_data(&spec, &a.log.side_data()?, &customers)?)
        }
    };
    let defaults = TrainOptions::default();
    let opts = TrainOptions { seed: a.seed, threads: a.threads.unwrap_or(defaults.threads), ..defaults };
    prune_and_fine_tune(file, &plan, data.as_ref(), &opts, &mut |step, epoch, loss| {
        log::debug(&format!("pruning step {step}, fine-tuning epoch {epoch}: loss {loss:.4}"));
    })
}

/// Per layer, the pattern applied (or why none), and the sparsity over the prunable layers and the
/// whole model.
fn write_prune_report(w: &mut dyn std::io::Write, r: &PruneReport) -> std::io::Result<()> {
    writeln!(w, "{:<16} {:<14} {:>9} {:>9}  note", "layer", "pattern", "weights", "pruned")?;
    for l in &r.layers {
        let pattern = l.pattern.map_or("dense".to_string(), |p| p.to_string());
        let share = if l.weights == 0 { 0.0 } else { 100.0 * l.pruned as f64 / l.weights as f64 };
        let note = l.note.as_deref().unwrap_or("");
        writeln!(w, "{:<16} {pattern:<14} {:>9} {share:>8.1}%  {note}", l.layer, l.weights)?;
    }
    writeln!(
        w,
        "sparsity {:.1}% over the prunable layers, {:.1}% over the whole model",
        100.0 * r.prunable_sparsity(),
        100.0 * r.model_sparsity()
    )
}

/// One line per layer: what int8 did to it on the calibration customers.
fn write_quantization_report(w: &mut dyn std::io::Write, errors: &[LayerError]) -> std::io::Result<()> {
    writeln!(
        w,
        "{:<16} {:>11} {:>4} {:>23} {:>8} {:>11} {:>11} {:>9}",
        "layer", "scale", "zp", "range", "clipped", "mean |err|", "max |err|", "rel RMSE"
    )?;
    for e in errors {
        let head = if e.scale > 0.0 { "(i32 accumulator)" } else { "(f32 head)" };
        let range = e.range.map_or(head.to_string(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"));
        let zp = e.zero_point.map_or("-".to_string(), |z| z.to_string());
        writeln!(
            w,
            "{:<16} {:>11.4e} {zp:>4} {range:>23} {:>7.4}% {:>11.3e} {:>11.3e} {:>8.2}%",
            e.layer,
            e.scale,
            100.0 * e.clipped,
            e.mean_abs_error,
            e.max_abs_error,
            100.0 * e.relative_rmse
        )?;
    }
    Ok(())
}

/// Customers to calibrate int8 ranges on (none of the holdout), and where they came from.
fn calibration_batch(
    model: &Model,
    a: &Args,
    log_data: Option<&Transactions>,
    holdout: &HashSet<String>,
) -> Result<(ltvx::Batch, String)> {
    if a.synthetic_calibration {
        let n = a.calibration_customers.max(1);
        return Ok((synthetic::customers(model.graph().inputs, n, 0), "synthetic".into()));
    }
    let Some(log_data) = log_data else {
        return Err(Error::Input(
            "int8 needs calibration customers: --calibration-transactions FILE (or --synthetic-calibration)".into(),
        ));
    };
    let spec = feature_spec(model)?;
    spec.check_log(&a.log.shape(log_data))?;
    let customers: Vec<_> =
        eligible(log_data, spec.cutoff_day()?).into_iter().filter(|c| !holdout.contains(c.id)).collect();
    let step = customers.len().div_ceil(a.calibration_customers.max(1)).max(1);
    let chosen: Vec<_> = customers.into_iter().step_by(step).collect();
    let source = a.log.transactions.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let side = a.log.side_data()?;
    Ok((spec.featurizer(&side)?.batch(&chosen)?, source))
}
