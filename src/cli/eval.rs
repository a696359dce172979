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
use serde_json::json;

use super::log_args::LogArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The trained model file (its FeatureSpec fixes cutoff and horizons).
    /// The trained model file(s); several are compared side by side (e.g. fp32, int8, fp16).
    #[arg(required = true, num_args = 1..)]
    models: Vec<PathBuf>,
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

/// One evaluated model file.
struct Evaluated {
    path: PathBuf,
    model: Model,
    evaluation: Evaluation,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let log_data = a.log.require()?;
    let side = a.log.side_data()?;
    let only = a.customers.as_deref().map(read_ids).transpose()?;
    let mut all = Vec::new();
    for path in &a.models {
        let model = Model::open(path)?;
        ltvx::eval::evaluate::feature_spec(&model)?.check_log(&a.log.shape(&log_data))?;
        if only.is_none() && model.meta.provenance["command"] == "train" {
            super::log::warn(&format!(
                "{}: evaluating every customer of the log, those the model was trained on included; \
                 --customers FILE with the held-out ids gives an honest measure",
                path.display()
            ));
        }
        let engine = Engine::build_with(&model, a.backend, &super::engine_options(None))?;
        let evaluation = evaluate(&model, &engine, &log_data, &side, only.as_ref())?;
        report_notes(&evaluation);
        all.push(Evaluated { path: path.clone(), model, evaluation });
    }
    if let Some(dir) = &a.plot {
        for e in &all {
            // One folder per model when several are compared.
            let stem = e.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let dir = if all.len() == 1 { dir.clone() } else { dir.join(stem) };
            for path in e.evaluation.write_charts(&dir)? {
                super::log::info(&format!("wrote {}", path.display()));
            }
        }
    }
    match (&all[..], a.json) {
        ([one], true) => super::print_json(&serde_json::to_value(&one.evaluation).expect("evaluations serialize"))?,
        ([one], false) => super::with_stdout(|w| write_table(w, &one.evaluation))?,
        (_, true) => super::print_json(&json!({"models": all.iter().map(summary).collect::<Vec<_>>()}))?,
        (_, false) => super::with_stdout(|w| write_comparison(w, &all))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn report_notes(e: &Evaluation) {
    e.notes.iter().for_each(|note| super::log::warn(note));
    if e.listed_but_not_eligible > 0 {
        super::log::warn(&format!(
            "{} listed customers are not in the log or bought nothing by the cutoff: not evaluated",
            e.listed_but_not_eligible
        ));
    }
}

/// What sets compressed models apart, beside their metrics.
fn summary(e: &Evaluated) -> serde_json::Value {
    let m = &e.model;
    let info = ltvx::model::summary::summary(m);
    json!({
        "file": e.path.display().to_string(),
        "precision": m.precision(),
        "sparsity": info["sparsity"],
        "macs_per_customer": m.macs(),
        "tensor_bytes": m.tensor_bytes(),
        "evaluation": e.evaluation,
    })
}

/// Several models side by side: a column each, then the baseline of the first.
fn write_comparison(w: &mut dyn Write, all: &[Evaluated]) -> std::io::Result<()> {
    let first = &all[0].evaluation;
    writeln!(
        w,
        "{} customers; cutoff {}, LTV horizon {} weeks",
        first.model.customers, first.cutoff, first.horizon_weeks
    )?;
    let name = |e: &Evaluated| e.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    write!(w, "{:<28}", "metric")?;
    for e in all {
        write!(w, " {:>16}", name(e))?;
    }
    writeln!(w, " {:>12}", "BG/NBD+GG")?;
    let info: Vec<serde_json::Value> = all.iter().map(summary).collect();
    for (label, key) in [
        ("precision", "precision"),
        ("sparsity", "sparsity"),
        ("MACs per customer", "macs_per_customer"),
        ("tensor bytes", "tensor_bytes"),
    ] {
        write!(w, "{label:<28}")?;
        for v in &info {
            let text = match &v[key] {
                serde_json::Value::Number(n) if key == "sparsity" => {
                    format!("{:.1}%", 100.0 * n.as_f64().unwrap_or(0.0))
                }
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            write!(w, " {text:>16}")?;
        }
        writeln!(w, " {:>12}", "-")?;
    }
    for (label, metric) in METRICS {
        write!(w, "{label:<28}")?;
        for e in all {
            write!(w, " {:>16.4}", metric(&e.evaluation.model.ltv, &e.evaluation.model.churn))?;
        }
        let theirs = first.baseline.as_ref().map_or("-".to_string(), |b| format!("{:.4}", metric(&b.ltv, &b.churn)));
        writeln!(w, " {theirs:>12}")?;
    }
    Ok(())
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
