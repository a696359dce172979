//! `ltvx demo`: the main job on the bundled CDNOW log, with nothing but this repository — split the
//! customers in two, train a value model on one half, evaluate it on the other beside BG/NBD, draw
//! the charts, compress it to int8 and to a pruned int8 model and judge those too, score every
//! customer, and report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ltvx::backend::BackendChoice;
use ltvx::data::feature_spec::{LogShape, SideData, parse_date};
use ltvx::data::ingest::{IngestOptions, ingest_reader};
use ltvx::data::labels::eligible;
use ltvx::data::transactions::Transactions;
use ltvx::engine::Batch;
use ltvx::engine::Engine;
use ltvx::eval::evaluate::{Evaluation, evaluate, feature_spec};
use ltvx::model::calibrate::{Method, observe};
use ltvx::model::prune::Pattern;
use ltvx::model::quantize::{Int8Options, to_int8};
use ltvx::model::summary::summary;
use ltvx::model::{ModelFile, Preset};
use ltvx::rng::Rng;
use ltvx::train::TrainOptions;
use ltvx::train::fine_tune::{PruneSchedule, prune_and_fine_tune};
use ltvx::train::from_log::{LogTraining, labelled_data, train_from_log};
use ltvx::{Model, Result};

/// The real CDNOW log (see data/SOURCE.md), in the binary so that the demo runs from anywhere.
const CDNOW: &[u8] = include_bytes!("../../data/CDNOW_master.txt");
/// The standard protocol on CDNOW: 39 weeks of calibration, 39 weeks of holdout.
const CUTOFF: &str = "1997-09-30";
const HORIZON_WEEKS: usize = 39;

#[derive(clap::Args)]
pub struct Args {
    /// Where the model, scores and charts are written.
    #[arg(long, default_value = "ltvx-demo")]
    out_dir: PathBuf,
    /// Seeds the customer split and the training.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let start = Instant::now();
    std::fs::create_dir_all(&a.out_dir).map_err(|e| ltvx::Error::io(&a.out_dir, e))?;
    let (log_data, report) = ingest_reader("CDNOW_master.txt (bundled)", CDNOW, &IngestOptions::default())?;
    let cutoff_day = parse_date(CUTOFF)?;
    println!(
        "data      CDNOW: {} customers, {} purchase occasions ({} same-day rows merged); cutoff {CUTOFF}, horizon {HORIZON_WEEKS} weeks",
        report.customers, report.purchase_occasions, report.same_day_merged.count
    );

    let test = half_of(&log_data, cutoff_day, a.seed);
    let cfg = LogTraining {
        refit: true,
        log_shape: LogShape { quantity_column: log_data.has_quantity(), returns_kept: true, duplicates_dropped: false },
        cutoff_day,
        horizon_weeks: HORIZON_WEEKS,
        churn_weeks: HORIZON_WEEKS,
        weeks: 52,
        preset: Preset::Base,
        options: TrainOptions { seed: a.seed, ..TrainOptions::default() },
        holdout: test.clone(),
        scale: Default::default(),
    };
    let t = Instant::now();
    let no_side_data = SideData::default();
    let trained = train_from_log(&log_data, &no_side_data, &cfg, None, &mut |_| {})?;
    let model_path = a.out_dir.join("value-model.ltvx");
    trained.file.save(&model_path)?;
    println!(
        "train     base preset on {} customers: best epoch {} of {}, {:.1} s → {}",
        trained.customers,
        trained.outcome.best_epoch,
        trained.outcome.history.len(),
        t.elapsed().as_secs_f64(),
        model_path.display()
    );
    super::check_interrupt()?;

    let model = Model::open(&model_path)?;
    let engine = Engine::build_with(&model, a.backend, &super::engine_options(None))?;
    let e = evaluate(&model, &engine, &log_data, &no_side_data, Some(&test))?;
    let charts = a.out_dir.join("charts");
    let written = e.write_charts(&charts)?;
    println!("evaluate  {} held-out customers (BG/NBD + Gamma-Gamma fitted on the other half):\n", e.model.customers);
    super::with_stdout(|w| super::eval::write_table(w, &e))?;
    super::check_interrupt()?;

    // Compression, judged on the same half: int8 calibrated on up to 2,000 training customers; and
    // 75 % of the trunk pruned in 4×16 blocks (three steps, fine-tuned on the training half after
    // each), then int8.
    let spec = feature_spec(&model)?;
    let training: Vec<_> = eligible(&log_data, cutoff_day).into_iter().filter(|c| !test.contains(c.id)).collect();
    let step = training.len().div_ceil(2000).max(1);
    let calibration =
        spec.featurizer(&no_side_data)?.batch(&training.iter().step_by(step).cloned().collect::<Vec<_>>())?;
    let judge = Judge {
        parent: &model,
        parent_eval: &e,
        calibration: &calibration,
        log: &log_data,
        test: &test,
        backend: a.backend,
    };
    judge.int8("int8", &model.to_model_file(), &a.out_dir.join("value-model-int8.ltvx"))?;
    super::check_interrupt()?;
    let t = Instant::now();
    let mut pruned = model.to_model_file();
    let plan = PruneSchedule { pattern: Pattern::Block { rows: 4, cols: 16 }, sparsity: 0.75, steps: 3, epochs: 3 };
    let data = labelled_data(&spec, &no_side_data, &training)?;
    prune_and_fine_tune(&mut pruned, &plan, Some(&data), &cfg.options, &mut |_, _, _| {})?;
    let label = format!("pruned 75% (block 4×16, fine-tuned {:.0} s) + int8", t.elapsed().as_secs_f64());
    judge.int8(&label, &pruned, &a.out_dir.join("value-model-pruned-int8.ltvx"))?;
    super::check_interrupt()?;

    let everyone = eligible(&log_data, cutoff_day);
    let batch = spec.featurizer(&no_side_data)?.batch(&everyone)?;
    let t = Instant::now();
    let scores = engine.score(&batch)?;
    let secs = t.elapsed().as_secs_f64();
    let scores_path = a.out_dir.join("scores.csv");
    let ids: Vec<String> = everyone.iter().map(|c| c.id.to_string()).collect();
    super::score::write_csv(&scores_path, &ids, &scores)?;
    println!(
        "\nscore     {} customers on {} in {secs:.2} s ({:.0} customers/s) → {}",
        scores.len(),
        engine.describe(),
        scores.len() as f64 / secs,
        scores_path.display()
    );
    println!("charts    {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    println!("done in {:.0} s; next: ltvx info {}", start.elapsed().as_secs_f64(), model_path.display());
    Ok(ExitCode::SUCCESS)
}

/// What the compression steps compare against: the fp32 model and its evaluation, on the same
/// held-out half.
struct Judge<'a> {
    parent: &'a Model,
    parent_eval: &'a Evaluation,
    calibration: &'a Batch,
    log: &'a Transactions,
    test: &'a HashSet<String>,
    backend: BackendChoice,
}

impl Judge<'_> {
    /// Converts the float `file` to int8 (calibrated on the calibration customers as `compress` does
    /// by default), writes it to `path`,
    /// evaluates it and prints one line against the fp32 parent.
    fn int8(&self, label: &str, file: &ModelFile, path: &Path) -> Result<()> {
        let ranges = observe(&file.clone().into_model()?, self.calibration, Method::DEFAULT)?;
        let opts = Int8Options {
            f32_heads: false,
            calibration: format!("{} over {} customers", Method::DEFAULT, self.calibration.len()),
        };
        let int8 = to_int8(file, &ranges, &opts)?.save(path)?;
        let no_side_data = SideData::default();
        let e8 = evaluate(
            &int8,
            &Engine::build_with(&int8, self.backend, &super::engine_options(None))?,
            self.log,
            &no_side_data,
            Some(self.test),
        )?;
        let (m, p) = (&e8.model, &self.parent_eval.model);
        println!(
            "\ncompress  {label} → {}: tensors {} → {} bytes, sparsity {:.1}%; Gini {:.4} ({:+.4}), churn AUC {:.4} ({:+.4}), decile MAPE {:.4} ({:+.4})",
            path.display(),
            self.parent.tensor_bytes(),
            int8.tensor_bytes(),
            100.0 * summary(&int8)["sparsity"].as_f64().unwrap_or(0.0),
            m.ltv.normalized_gini,
            m.ltv.normalized_gini - p.ltv.normalized_gini,
            m.churn.auc,
            m.churn.auc - p.churn.auc,
            m.ltv.decile_mape,
            m.ltv.decile_mape - p.ltv.decile_mape,
        );
        Ok(())
    }
}

/// A seeded half of the customers who bought by the cutoff: the held-out test set.
fn half_of(log_data: &ltvx::data::transactions::Transactions, cutoff_day: i32, seed: u64) -> HashSet<String> {
    let mut ids: Vec<&str> = eligible(log_data, cutoff_day).iter().map(|c| c.id).collect();
    let mut rng = Rng::derive(seed, "demo-split");
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    ids[..ids.len() / 2].iter().map(|s| s.to_string()).collect()
}
