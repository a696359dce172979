//! The evaluation charts (`--plot DIR`): the four SVG files, the curves they draw, and input that
//! cannot be charted.

use std::path::Path;

use ltvx::Error;
use ltvx::eval::charts::{self, ChartInput, ChartModel};
use ltvx::eval::metrics::{binary, ltv};
use ltvx::rng::Rng;

/// Customers with a latent value and churn risk, and two models: "ltvx" sees both with little
/// noise (and is calibrated), "BG/NBD" with more noise and overconfident churn probabilities.
struct Synthetic {
    spend: Vec<f64>,
    churned: Vec<bool>,
    ltvx_ltv: Vec<f64>,
    ltvx_churn: Vec<f64>,
    bgnbd_ltv: Vec<f64>,
    bgnbd_churn: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl Synthetic {
    fn new(customers: usize) -> Self {
        let mut rng = Rng::new(7);
        let mut s = Synthetic {
            spend: vec![],
            churned: vec![],
            ltvx_ltv: vec![],
            ltvx_churn: vec![],
            bgnbd_ltv: vec![],
            bgnbd_churn: vec![],
        };
        for _ in 0..customers {
            let value = (3.0 + rng.normal()).exp();
            let risk_logit = rng.normal() * 1.5;
            let churned = rng.uniform() < sigmoid(risk_logit);
            // Churners spend nothing in the horizon: many tied zeros, as in real data.
            s.spend.push(if churned { 0.0 } else { value * (0.5 * rng.normal()).exp() });
            s.churned.push(churned);
            s.ltvx_ltv.push(value * (1.0 - sigmoid(risk_logit)) * (0.3 * rng.normal()).exp());
            s.ltvx_churn.push(sigmoid(risk_logit));
            s.bgnbd_ltv.push(value * (rng.normal()).exp());
            s.bgnbd_churn.push(sigmoid(2.5 * risk_logit + rng.normal()));
        }
        s
    }

    fn input(&self) -> ChartInput<'_> {
        ChartInput {
            actual_spend: &self.spend,
            churned: &self.churned,
            models: vec![
                ChartModel { name: "ltvx", ltv: &self.ltvx_ltv, churn_probability: &self.ltvx_churn },
                ChartModel { name: "BG/NBD", ltv: &self.bgnbd_ltv, churn_probability: &self.bgnbd_churn },
            ],
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A minimal well-formedness check: one `<svg>` document holding every expected text.
fn assert_svg(svg: &str, texts: &[&str]) {
    assert!(svg.trim_start().starts_with("<svg"), "does not start with <svg: {:.80}", svg);
    assert!(svg.trim_end().ends_with("</svg>"), "does not end with </svg>");
    assert_eq!(svg.matches("<svg").count(), 1);
    for text in texts {
        assert!(svg.contains(text), "no {text:?} in the SVG");
    }
}

#[test]
fn writes_four_labelled_svgs() {
    let data = Synthetic::new(500);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plots/nested");
    let paths = charts::write_charts(&dir, &data.input()).unwrap();

    let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["gain.svg", "deciles.svg", "roc.svg", "reliability.svg"]);
    assert!(paths.iter().all(|p| p.parent() == Some(dir.as_path())));
    // Atomic writes leave no temporary files behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);

    let models = ["ltvx (Gini ", "BG/NBD (Gini "];
    assert_svg(&read(&paths[0]), &[&["Gain: share of actual spend", "oracle", "random"][..], &models].concat());
    assert_svg(
        &read(&paths[1]),
        &["Mean spend by predicted decile", "ltvx actual", "ltvx predicted", "BG/NBD actual", "BG/NBD predicted"],
    );
    assert_svg(&read(&paths[2]), &["Churn ROC", "random (AUC 0.5)", "ltvx (AUC ", "BG/NBD (AUC "]);
    assert_svg(&read(&paths[3]), &["Churn reliability", "perfectly calibrated", "ltvx (ECE ", "BG/NBD (ECE "]);

    // Writing again replaces the files.
    assert_eq!(charts::write_charts(&dir, &data.input()).unwrap(), paths);
}

#[test]
fn a_perfect_ranking_gains_what_the_oracle_gains() {
    let data = Synthetic::new(300);
    let spend = &data.spend;
    let oracle = charts::gain_curve(spend, spend).unwrap();
    // Any increasing function of actual spend ranks (and ties) customers exactly as it does.
    let perfect: Vec<f64> = spend.iter().map(|s| 2.0 * s + 1.0).collect();
    assert_eq!(charts::gain_curve(&perfect, spend).unwrap(), oracle);

    assert_eq!(oracle.len(), spend.len() + 1);
    assert_eq!((oracle[0], oracle[spend.len()]), ((0.0, 0.0), (1.0, 1.0)));
    // The oracle is the best gain at every depth.
    let model = charts::gain_curve(&data.ltvx_ltv, spend).unwrap();
    assert!(model.iter().zip(&oracle).all(|(m, o)| m.1 <= o.1 + 1e-12));
}

#[test]
fn the_gain_curve_agrees_with_top_share_and_averages_ties() {
    let data = Synthetic::new(200);
    let curve = charts::gain_curve(&data.bgnbd_ltv, &data.spend).unwrap();
    for k in [0, 20, 50, 200] {
        let share = ltv::top_share(&data.bgnbd_ltv, &data.spend, k as f64 / 200.0);
        assert!((curve[k].1 - share).abs() < 1e-12, "at {k}: {} vs {share}", curve[k].1);
    }
    // A constant prediction says nothing about order: its gain is the diagonal.
    let constant = charts::gain_curve(&[5.0; 200], &data.spend).unwrap();
    assert!(constant.iter().all(|(x, y)| (x - y).abs() < 1e-12));
    assert!(charts::gain_curve(&[1.0, 2.0], &[0.0, 0.0]).is_none());
}

#[test]
fn the_area_under_the_roc_curve_is_the_auc() {
    let data = Synthetic::new(300);
    // Rounding makes many ties, which the curve crosses diagonally and the AUC counts one half.
    let rounded: Vec<f64> = data.bgnbd_churn.iter().map(|p| (p * 10.0).round() / 10.0).collect();
    for p in [&data.ltvx_churn, &rounded] {
        let curve = charts::roc_curve(p, &data.churned).unwrap();
        let area: f64 = curve.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
        let auc = binary::auc(p, &data.churned);
        assert!((area - auc).abs() < 1e-12, "{area} vs {auc}");
    }
}

#[test]
fn undefined_charts_carry_a_note() {
    let data = Synthetic::new(100);
    let tmp = tempfile::tempdir().unwrap();

    let no_spend = vec![0.0; 100];
    let input = ChartInput { actual_spend: &no_spend, ..data.input() };
    let paths = charts::write_charts(tmp.path(), &input).unwrap();
    assert_svg(&read(&paths[0]), &["No spend in the horizon"]);
    assert!(!read(&paths[0]).contains("oracle"));
    assert_svg(&read(&paths[1]), &["ltvx actual"]);

    let nobody_churned = vec![false; 100];
    let input = ChartInput { churned: &nobody_churned, ..data.input() };
    let paths = charts::write_charts(tmp.path(), &input).unwrap();
    assert_svg(&read(&paths[2]), &["A single churn outcome"]);
    assert_svg(&read(&paths[3]), &["ltvx (ECE "]);
}

#[test]
fn input_that_cannot_be_charted_is_an_error_and_writes_nothing() {
    let data = Synthetic::new(10);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plots");
    let error = |input: &ChartInput| match charts::write_charts(&dir, input) {
        Err(Error::Input(message)) => message,
        other => panic!("expected an input error, got {other:?}"),
    };

    let empty = ChartInput { actual_spend: &[], churned: &[], models: vec![] };
    assert_eq!(error(&empty), "charts: no customers to plot");
    assert_eq!(error(&ChartInput { models: vec![], ..data.input() }), "charts: no models to plot");

    let short = &data.ltvx_ltv[..9];
    let mut input = data.input();
    input.models[1].ltv = short;
    assert_eq!(error(&input), "charts: 9 BG/NBD LTV values for 10 customers");
    assert_eq!(error(&ChartInput { churned: &[true], ..data.input() }), "charts: 1 churn outcomes for 10 customers");

    let mut probabilities = data.ltvx_churn.clone();
    probabilities[3] = f64::NAN;
    let mut input = data.input();
    input.models[0].churn_probability = &probabilities;
    assert_eq!(error(&input), "charts: ltvx churn probability of customer 3 is NaN");

    assert!(!dir.exists());
}
