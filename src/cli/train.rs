//! `ltvx train`: a value model trained on a transaction log (and optional attributes and events),
//! written with its FeatureSpec.

use std::path::PathBuf;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};
use ltvx::Result;
use ltvx::data::attributes::Scale;
use ltvx::data::ingest::parse_day;
use ltvx::model::Preset;
use ltvx::train::from_log::{Distillation, LogTraining, train_from_log};
use ltvx::train::{EpochReport, TrainOptions};

use super::log_args::LogArgs;
use super::{eval::read_ids, log};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    log: LogArgs,
    /// The last day of the calibration period (features use purchases up to and including it).
    #[arg(long)]
    cutoff: String,
    /// Weeks after the cutoff whose spend is the LTV label.
    #[arg(long)]
    horizon_weeks: usize,
    /// Weeks after the cutoff without a purchase that make a customer churned (default: the horizon).
    #[arg(long)]
    churn_weeks: Option<usize>,
    /// Weeks of purchase history in the sequence input.
    #[arg(long, default_value_t = 52)]
    weeks: usize,
    /// How numeric attributes are scaled: standardize (default) or minmax.
    #[arg(long)]
    scale: Option<Scale>,
    #[arg(long, default_value = "base")]
    preset: Preset,
    /// Most epochs (early stopping usually ends sooner).
    #[arg(long)]
    epochs: Option<usize>,
    /// Customers per optimizer step.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    learning_rate: Option<f64>,
    /// AdamW's decoupled weight decay (biases are not decayed).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Decay of the running weight average that is validated and kept (0 = last weights).
    #[arg(long)]
    weight_averaging: Option<f64>,
    /// Keep the weights of the early-stopped run instead of training again on every customer for the
    /// epoch count it chose.
    #[arg(long)]
    no_refit: bool,
    /// Share of the training customers held out to choose the best epoch.
    #[arg(long)]
    validation_fraction: Option<f64>,
    /// Epochs without a better validation loss before training stops.
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training threads (results are reproducible for a given seed and thread count).
    #[arg(long)]
    threads: Option<usize>,
    /// Customers (one id per line) never used for training, scaling or early stopping.
    #[arg(long)]
    holdout_customers: Option<PathBuf>,
    /// A trained float model whose outputs the new model also learns from (distillation).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// How much the divergence from the teacher counts beside the labels' loss.
    #[arg(long, default_value_t = 1.0, requires = "teacher")]
    distill_weight: f64,
    /// The model file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let log_data = a.log.require()?;
    let side = a.log.side_data()?;
    if a.scale.is_some() && side.attributes.is_none() {
        return Err(ltvx::Error::Input(
            "--scale says how numeric attributes are scaled: it needs --attributes FILE".into(),
        ));
    }
    let defaults = TrainOptions::default();
    let options = TrainOptions {
        epochs: a.epochs.unwrap_or(defaults.epochs),
        batch_size: a.batch_size.unwrap_or(defaults.batch_size),
        learning_rate: a.learning_rate.unwrap_or(defaults.learning_rate),
        weight_decay: a.weight_decay.unwrap_or(defaults.weight_decay),
        patience: a.patience.unwrap_or(defaults.patience),
        validation_fraction: a.validation_fraction.unwrap_or(defaults.validation_fraction),
        weight_averaging: a.weight_averaging.unwrap_or(defaults.weight_averaging),
        seed: a.seed,
        threads: a.threads.unwrap_or(defaults.threads),
        ..defaults
    };
    let cfg = LogTraining {
        refit: !a.no_refit,
        log_shape: a.log.shape(&log_data),
        cutoff_day: parse_day(&a.cutoff, None).map_err(|e| ltvx::Error::Input(format!("--cutoff: {e}")))?,
        horizon_weeks: a.horizon_weeks,
        churn_weeks: a.churn_weeks.unwrap_or(a.horizon_weeks),
        weeks: a.weeks,
        preset: a.preset,
        holdout: a.holdout_customers.as_deref().map(read_ids).transpose()?.unwrap_or_default(),
        scale: a.scale.unwrap_or_default(),
        options,
    };
    let bar = progress_bar(cfg.options.epochs as u64);
    let mut on_epoch = |e: &EpochReport| {
        bar.set_message(format!("loss {:.4}, validation {:.4}", e.train_loss, e.validation.total));
        bar.inc(1);
        log::debug(&format!(
            "epoch {}: train {:.4}, validation {:.4} ({:.1} s)",
            e.epoch, e.train_loss, e.validation.total, e.seconds
        ));
    };
    let teacher = a.teacher.as_deref().map(ltvx::Model::open).transpose()?;
    let distillation = teacher.as_ref().map(|teacher| Distillation { teacher, weight: a.distill_weight });
    let trained = train_from_log(&log_data, &side, &cfg, distillation, &mut on_epoch)?;
    bar.finish_and_clear();
    trained.notes.iter().for_each(|note| log::warn(note));
    super::check_interrupt()?;
    trained.file.save(&a.out)?;
    let best = &trained.outcome.history[trained.outcome.best_epoch - 1];
    log::info(&format!(
        "wrote {}: {} preset trained on {} customers, best epoch {} of {} (validation loss {:.4})",
        a.out.display(),
        a.preset,
        trained.customers,
        trained.outcome.best_epoch,
        trained.outcome.history.len(),
        best.validation.total
    ));
    Ok(ExitCode::SUCCESS)
}

/// Epochs on stderr, or nothing with --quiet.
fn progress_bar(epochs: u64) -> ProgressBar {
    if !log::enabled(log::Level::Info) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(epochs);
    let style = ProgressStyle::with_template("training {bar:30} epoch {pos}/{len} {msg} [{elapsed}]")
        .expect("a valid template");
    bar.set_style(style);
    bar
}
