//! The transaction-log workflow end to end, as a user runs it: train on a log, evaluate beside
//! BG/NBD with charts, score from the log, and the bundled demo.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{ltvx, ok};
use serde_json::Value;

const SAMPLE_COLUMNS: &str = "customer=0,date=2,quantity=3,amount=4";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// Every other customer id of the paper's sample: the held-out half.
fn holdout(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(data("CDNOW_sample.txt")).unwrap();
    let mut ids: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    ids.dedup();
    let path = dir.join("holdout.txt");
    std::fs::write(&path, ids.iter().step_by(2).map(|id| format!("{id}\n")).collect::<String>()).unwrap();
    path
}

fn log_args(sample: &str) -> Vec<&str> {
    vec!["--transactions", sample, "--columns", SAMPLE_COLUMNS]
}

#[test]
fn train_eval_and_score_from_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let (sample, held) = (data("CDNOW_sample.txt"), holdout(dir.path()));
    let (sample, held) = (sample.to_str().unwrap(), held.to_str().unwrap());
    let model = dir.path().join("m.ltvx");
    let model = model.to_str().unwrap();
    let mut train = vec!["-q", "train", "--cutoff", "1997-09-30", "--horizon-weeks", "39", "--preset", "tiny"];
    train.extend(log_args(sample));
    train.extend(["--epochs", "30", "--batch-size", "32", "--holdout-customers", held, "--out", model]);
    ok(&train);

    let info: Value = serde_json::from_str(&ok(&["info", model, "--json"])).unwrap();
    assert_eq!(info["feature_spec"]["cutoff"], "1997-09-30");
    assert_eq!(info["provenance"]["command"], "train");
    assert_eq!(info["inputs"]["static_features"], info["feature_spec"]["statics"].as_array().unwrap().len());

    let charts = dir.path().join("charts");
    let mut eval = vec!["-q", "eval", model, "--customers", held, "--json", "--plot", charts.to_str().unwrap()];
    eval.extend(log_args(sample));
    let report: Value = serde_json::from_str(&ok(&eval)).unwrap();
    let customers = report["model"]["customers"].as_u64().unwrap();
    assert!((1100..=1200).contains(&customers), "about half of 2,357: {customers}");
    for path in [&report["model"]["ltv"]["normalized_gini"], &report["baseline"]["ltv"]["normalized_gini"]] {
        assert!(path.as_f64().is_some_and(|g| g > 0.3 && g <= 1.0), "a real ranking: {report}");
    }
    assert!(report["baseline"]["churn"]["auc"].as_f64().unwrap() > 0.6);
    for chart in ["gain.svg", "deciles.svg", "roc.svg", "reliability.svg"] {
        assert!(std::fs::read_to_string(charts.join(chart)).unwrap().starts_with("<svg"), "{chart}");
    }

    // Compression: int8 calibrated on the log, fp16; the clear refusals.
    let int8 = dir.path().join("m-int8.ltvx");
    let int8 = int8.to_str().unwrap();
    let mut compress = vec!["-q", "compress", model, "--to", "int8", "--calibration", "percentile:99.9", "--out", int8];
    compress.extend(log_args(sample));
    ok(&compress);
    let compressed: Value = serde_json::from_str(&ok(&["info", int8, "--json"])).unwrap();
    assert_eq!(compressed["precision"], "int8");
    assert_eq!(compressed["feature_spec"], info["feature_spec"], "the FeatureSpec travels with the model");
    for (args, needle) in [
        (vec!["compress", int8, "--to", "fp16", "--out", "x.ltvx"], "already int8"),
        (vec!["compress", model, "--to", "int8", "--out", "x.ltvx"], "calibration"),
    ] {
        let r = ltvx(&args);
        assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains(needle), "{args:?}");
    }

    // A log read differently from the training log would change what the features mean.
    let no_quantity = ["score", model, "--transactions", sample, "--columns", "customer=0,date=2,amount=4"];
    let r = ltvx(&no_quantity);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("quantity column"));
    let mut dropped = vec!["score", model, "--drop-returns"];
    dropped.extend(log_args(sample));
    assert!(String::from_utf8_lossy(&ltvx(&dropped).stderr).contains("returns kept"));

    // Side by side: a column per model, and the same as JSON.
    let mut both = vec!["-q", "eval", model, int8, "--customers", held];
    both.extend(log_args(sample));
    let table = ok(&both);
    assert!(table.contains("m.ltvx") && table.contains("m-int8.ltvx") && table.contains("tensor bytes"), "{table}");
    both.push("--json");
    let side_by_side: Value = serde_json::from_str(&ok(&both)).unwrap();
    let models = side_by_side["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["precision"], "int8");
    assert!(models[1]["tensor_bytes"].as_u64() < models[0]["tensor_bytes"].as_u64());
    let gini = |m: &Value| m["evaluation"]["model"]["ltv"]["normalized_gini"].as_f64().unwrap();
    assert!((gini(&models[0]) - gini(&models[1])).abs() < 0.05, "int8 stays close to fp32");

    pruned_and_distilled(dir.path(), model, sample, held);

    let mut score = vec!["score", int8];
    score.extend(log_args(sample));
    assert_eq!(ok(&score).lines().count(), 1 + 2357, "the int8 model scores every customer too");
    let mut score = vec!["score", model];
    score.extend(log_args(sample));
    let csv = ok(&score);
    assert_eq!(csv.lines().count(), 1 + 2357, "a row for every customer who bought by the cutoff");
    assert!(csv.starts_with("customer_id,ltv,p_purchase,churn_probability,segment,p_segment_0"));
}

#[test]
fn a_model_without_feature_spec_cannot_be_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("init.ltvx");
    ok(&["-q", "init", "--preset", "tiny", "--out", model.to_str().unwrap()]);
    let sample = data("CDNOW_sample.txt");
    let mut args = vec!["eval", model.to_str().unwrap()];
    args.extend(log_args(sample.to_str().unwrap()));
    let out = ltvx(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no FeatureSpec"));
}

#[test]
fn demo_trains_evaluates_charts_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let report = ok(&["demo", "--out-dir", dir.path().to_str().unwrap()]);
    for needle in
        ["23570 customers", "LTV normalized Gini", "churn AUC", "compress  int8", "compress  pruned 75%", "customers/s"]
    {
        assert!(report.contains(needle), "{needle} missing from:\n{report}");
    }
    for file in ["value-model.ltvx", "value-model-int8.ltvx", "scores.csv", "charts/gain.svg", "charts/roc.svg"] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let scores = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().count(), 1 + 23_570);
}

/// Requests that cannot give honest labels or a real holdout are refused, saying why.
#[test]
fn training_refuses_what_would_mislead() {
    let dir = tempfile::tempdir().unwrap();
    let sample = data("CDNOW_sample.txt");
    let out = dir.path().join("m.ltvx");
    let ghosts = dir.path().join("ghosts.txt");
    std::fs::write(&ghosts, "no-such-customer\nnor-this-one\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--cutoff", "1998-03-31", "--horizon-weeks", "39"], "before the end of the label horizon"),
        (&["--cutoff", "1997-09-30", "--horizon-weeks", "0"], "horizon"),
        (&["--cutoff", "1997-09-30", "--horizon-weeks", "39", "--weeks", "70000"], "weeks of history"),
        (
            &["--cutoff", "1997-09-30", "--horizon-weeks", "39", "--holdout-customers", ghosts.to_str().unwrap()],
            "holdout ids",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["train", "--preset", "tiny", "--out", out.to_str().unwrap()];
        args.extend(log_args(sample.to_str().unwrap()));
        args.extend(extra);
        let r = ltvx(&args);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(!out.exists(), "{extra:?}: no model file is written");
    }
}

/// Pruning with fine-tuning then int8 (with the calibration report), what `info` says about it, and
/// a student distilled from the trained model.
fn pruned_and_distilled(dir: &Path, model: &str, sample: &str, held: &str) {
    let pruned = dir.join("m-pruned.ltvx");
    let pruned = pruned.to_str().unwrap();
    let mut compress = vec!["-q", "compress", model, "--prune", "0.5", "--prune-pattern", "block:4x4"];
    compress.extend(["--prune-steps", "2", "--fine-tune-epochs", "2", "--holdout-customers", held]);
    compress.extend(["--to", "int8", "--report", "--threads", "1", "--out", pruned]);
    compress.extend(log_args(sample));
    let out = ok(&compress);
    for needle in ["block:4x4", "head: never pruned", "over the prunable layers", "clipped", "rel RMSE", "churn_logit"]
    {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    let info: Value = serde_json::from_str(&ok(&["info", pruned, "--json"])).unwrap();
    assert_eq!(info["precision"], "int8");
    assert_eq!(info["provenance"]["pruned"]["fine_tune_epochs"], 2);
    for layer in info["layers"].as_array().unwrap() {
        let p = &layer["pruning"];
        if layer["head"].is_null() {
            assert_eq!(p["pattern"], "block:4x4", "{layer}");
            assert!((p["block_sparsity"].as_f64().unwrap() - 0.5).abs() < 0.02, "{layer}");
        } else {
            assert!(p.is_null(), "heads stay dense: {layer}");
        }
    }
    assert!(info["skippable_macs_per_customer"].as_u64().unwrap() > 0);
    assert!(ok(&["info", pruned]).contains("block:4x4"));

    let student = dir.join("m-student.ltvx");
    let student = student.to_str().unwrap();
    let mut train = vec!["-q", "train", "--cutoff", "1997-09-30", "--horizon-weeks", "39", "--preset", "tiny"];
    train.extend(["--epochs", "3", "--batch-size", "32", "--holdout-customers", held, "--teacher", model]);
    train.extend(["--distill-weight", "0.5", "--out", student]);
    train.extend(log_args(sample));
    ok(&train);
    let info: Value = serde_json::from_str(&ok(&["info", student, "--json"])).unwrap();
    assert_eq!(info["provenance"]["teacher"]["distill_weight"], 0.5);
    let mut int8_teacher = train.clone();
    let at = int8_teacher.iter().position(|a| *a == model).unwrap();
    int8_teacher[at] = pruned;
    let r = ltvx(&int8_teacher[1..]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("float model"), "{r:?}");
    for (args, needle) in [
        (vec!["compress", model, "--prune", "1.2", "--out", "x.ltvx"], "outside [0, 1)"),
        (
            vec!["compress", model, "--prune", "0.5", "--prune-pattern", "4:8", "--out", "x.ltvx"],
            "unknown pruning pattern",
        ),
        (vec!["compress", model, "--prune", "0.5", "--fine-tune-epochs", "1", "--out", "x.ltvx"], "--transactions"),
        (vec!["compress", model, "--out", "x.ltvx"], "nothing to do"),
    ] {
        let r = ltvx(&args);
        assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains(needle), "{args:?}: {r:?}");
    }
}
