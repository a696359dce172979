//! `ltvx eval`: a trained model's metrics on a transaction log, beside the BG/NBD + Gamma-Gamma
//! baseline that analysts use today.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ltvx::backend::BackendChoice;
use ltvx::engine::Engine;
use ltvx::eval::evaluate::{Evaluation, evaluate};
use ltvx::eval::report::{ChurnReport, LtvReport};
use ltvx::{Error, Model, Result};

use super::log_args::LogArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The trained model file (its FeatureSpec fixes cutoff and horizons).
    model: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    /// Evaluate only these customers (one id per line); the baseline is fitted on the others.
    #[arg(long)]
    customers: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write gain, decile, ROC and reliability charts (SVG) into this folder.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = Model::open(&a.model)?;
    let engine = Engine::build(&model, a.backend)?;
    let log_data = a.log.require()?;
    ltvx::eval::evaluate::feature_spec(&model)?.check_log(&a.log.shape(&log_data))?;
    let side = a.log.side_data()?;
    let only = a.customers.as_deref().map(read_ids).transpose()?;
    let e = evaluate(&model, &engine, &log_data, &side, only.as_ref())?;
    e.notes.iter().for_each(|note| super::log::warn(note));
    if e.listed_but_not_eligible > 0 {
        super::log::warn(&format!(
            "{} listed customers are not in the log or bought nothing by the cutoff: not evaluated",
            e.listed_but_not_eligible
        ));
    }
    if let Some(dir) = &a.plot {
        for path in e.write_charts(dir)? {
            super::log::info(&format!("wrote {}", path.display()));
        }
    }
    if a.json {
        super::print_json(&serde_json::to_value(&e).expect("evaluations serialize"))?;
    } else {
        super::with_stdout(|w| write_table(w, &e))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Customer ids, one per line (blank lines ignored).
pub fn read_ids(path: &Path) -> Result<HashSet<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ids: HashSet<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if ids.is_empty() {
        return Err(Error::Input(format!("{}: no customer ids", path.display())));
    }
    Ok(ids)
}

/// A metric of the LTV and churn reports, as the table shows it.
type Metric = (&'static str, fn(&LtvReport, &ChurnReport) -> f64);

const METRICS: [Metric; 15] = [
    ("LTV normalized Gini", |l, _| l.normalized_gini),
    ("LTV Spearman", |l, _| l.spearman),
    ("LTV decile MAPE", |l, _| l.decile_mape),
    ("LTV MAE", |l, _| l.mae),
    ("LTV RMSE", |l, _| l.rmse),
    ("LTV Σpred/Σactual", |l, _| l.total_ratio),
    ("LTV top-10% share", |l, _| l.top10_share),
    ("churn AUC", |_, c| c.auc),
    ("churn Brier", |_, c| c.brier),
    ("churn calibration error", |_, c| c.expected_calibration_error),
    ("churn accuracy @0.5", |_, c| c.at_half.accuracy),
    ("churn precision @0.5", |_, c| c.at_half.precision),
    ("churn recall @0.5", |_, c| c.at_half.recall),
    ("churn F1 @0.5", |_, c| c.at_half.f1),
    ("churn best F1", |_, c| c.best_f1.f1),
];

/// The side-by-side table people read.
pub fn write_table(w: &mut dyn Write, e: &Evaluation) -> std::io::Result<()> {
    let (m, b) = (&e.model, e.baseline.as_ref());
    let fitted = b.map_or("no baseline".to_string(), |b| format!("baseline fitted on {} customers", b.fitted_on));
    writeln!(
        w,
        "{} customers; cutoff {}, LTV horizon {} weeks, churn horizon {} weeks; {fitted}",
        m.customers, e.cutoff, e.horizon_weeks, e.churn_weeks
    )?;
    writeln!(w, "{:<28} {:>10} {:>12}", "metric", "ltvx", "BG/NBD+GG")?;
    for (name, metric) in METRICS {
        let theirs = b.map_or("-".to_string(), |b| format!("{:.4}", metric(&b.ltv, &b.churn)));
        writeln!(w, "{name:<28} {:>10.4} {theirs:>12}", metric(&m.ltv, &m.churn))?;
    }
    writeln!(w, "{:<28} {:>10.4} {:>12}", "segment accuracy", m.segment.accuracy, "-")?;
    writeln!(w, "{:<28} {:>10.4} {:>12}", "segment macro-F1", m.segment.macro_f1, "-")?;
    Ok(())
}
