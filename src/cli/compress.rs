//! `ltvx compress`: a float model to int8 (calibrated on real customers) or fp16.

use std::path::PathBuf;
use std::process::ExitCode;

use ltvx::data::labels::eligible;
use ltvx::data::synthetic;
use ltvx::eval::evaluate::feature_spec;
use ltvx::model::calibrate::{Method, observe};
use ltvx::model::quantize::{Int8Options, to_fp16, to_int8};
use ltvx::model::{Model, Precision};
use ltvx::{Error, Result};
use serde_json::json;

use super::init::parse_precision;
use super::log;
use super::log_args::LogArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The float model to compress.
    model: PathBuf,
    /// int8 or fp16.
    #[arg(long, value_parser = parse_precision)]
    to: Precision,
    /// Calibration customers' log (int8): features by the model's FeatureSpec at its cutoff.
    #[command(flatten)]
    log: LogArgs,
    /// Calibrate on synthetic customers instead (models made by `ltvx init`).
    #[arg(long, conflicts_with = "transactions")]
    synthetic_calibration: bool,
    /// minmax or percentile:P (e.g. percentile:99.99).
    #[arg(long, default_value = "minmax")]
    calibration: Method,
    /// At most this many calibration customers (evenly spread over the log).
    #[arg(long, default_value_t = 2000)]
    calibration_customers: usize,
    /// Keep the heads in f32 (run on the dequantized input) instead of int8.
    #[arg(long)]
    f32_heads: bool,
    /// The compressed model file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = Model::open(&a.model)?;
    if model.precision() == Precision::Int8 {
        return Err(Error::Input(format!("{}: the model is already int8", a.model.display())));
    }
    let mut file = match a.to {
        Precision::Int8 => {
            let (batch, source) = calibration_batch(&model, &a)?;
            let ranges = observe(&model, &batch, a.calibration)?;
            let calibration = format!("{} over {} customers ({source})", a.calibration, batch.len());
            to_int8(&model.to_model_file(), &ranges, &Int8Options { f32_heads: a.f32_heads, calibration })?
        }
        Precision::Fp16 => to_fp16(&model.to_model_file()),
        Precision::Fp32 => return Err(Error::Input("--to fp32: nothing to compress (expected int8 or fp16)".into())),
    };
    file.meta.provenance["compressed"] =
        json!({"from": model.hash(), "to": a.to.to_string(), "f32_heads": a.f32_heads});
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

/// Customers to calibrate int8 ranges on, and where they came from.
fn calibration_batch(model: &Model, a: &Args) -> Result<(ltvx::Batch, String)> {
    if a.synthetic_calibration {
        let n = a.calibration_customers.max(1);
        return Ok((synthetic::customers(model.graph().inputs, n, 0), "synthetic".into()));
    }
    let Some(log_data) = a.log.load()? else {
        return Err(Error::Input(
            "int8 needs calibration customers: --calibration-transactions FILE (or --synthetic-calibration)".into(),
        ));
    };
    let spec = feature_spec(model)?;
    spec.check_log(&a.log.shape(&log_data))?;
    let customers = eligible(&log_data, spec.cutoff_day()?);
    let step = customers.len().div_ceil(a.calibration_customers.max(1)).max(1);
    let chosen: Vec<_> = customers.into_iter().step_by(step).collect();
    let source = a.log.transactions.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let side = a.log.side_data()?;
    Ok((spec.featurizer(&side)?.batch(&chosen)?, source))
}
