//! BG/NBD and Gamma-Gamma on the real CDNOW data against published fits: Fader, Hardie & Lee
//! (2005) for the paper's 1/10 sample, the `lifetimes` package for the full file
//! (shared/data/reference/cdnow-baselines.md), the paper's conditional expectation checked
//! against an independent numerical integral, and the reference table's BG/NBD row on its splits.
//!
//! The files are parsed here by a few lines on purpose: this tests the models, not an ingest path.

use std::collections::HashMap;
use std::path::PathBuf;

use ltvx::eval::metrics::{binary, ltv};
use ltvx::eval::{BgNbd, Clv, Fit, GammaGamma, Rfm};

/// Calibration ends on 1997-09-30: day 272 counted from 1997-01-01.
const CALIBRATION_END: i32 = 272;
/// The holdout: 1997-10-01..=1998-06-30, 39 weeks.
const HOLDOUT_END: i32 = 545;
const HOLDOUT_WEEKS: f64 = 39.0;
/// Agreement demanded with the reference parameters: they are printed to 4 significant digits,
/// and a correct fit reproduces all of them (1% was the brief; 0.1% still leaves room for
/// rounding and a different libm).
const TOLERANCE: f64 = 0.001;

/// The project's copy of a CDNOW file, or the shared one beside the checkout.
fn cdnow(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bundled = root.join("data").join(name);
    if bundled.exists() { bundled } else { root.join("../shared/data/cdnow").join(name) }
}

/// Days since 1997-01-01 of a YYYYMMDD date (days-from-civil, proleptic Gregorian).
fn day_number(yyyymmdd: &str) -> i32 {
    let date: i32 = yyyymmdd.parse().unwrap();
    let (y, m, d) = (date / 10_000, date / 100 % 100, date % 100);
    let days_from_civil = |y: i32, m: i32, d: i32| {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let year_of_era = y - era * 400;
        let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
        era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year
    };
    days_from_civil(y, m, d) - days_from_civil(1997, 1, 1)
}

/// Every customer's `(day, dollars)` purchases in a whitespace-separated CDNOW file whose columns
/// `id`, `date` and `dollars` are given (the sample has an extra sample-id column, the full file
/// a header line).
fn purchases(name: &str, id: usize, date: usize, dollars: usize) -> HashMap<String, Vec<(i32, f64)>> {
    let text = std::fs::read_to_string(cdnow(name)).unwrap();
    let mut purchases: HashMap<String, Vec<(i32, f64)>> = HashMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let purchase = (day_number(fields[date]), fields[dollars].parse().unwrap());
        purchases.entry(fields[id].to_string()).or_default().push(purchase);
    }
    purchases
}

fn calibration(purchases: &[(i32, f64)]) -> Rfm {
    Rfm::from_purchases(purchases, CALIBRATION_END).unwrap()
}

fn sample() -> Vec<Rfm> {
    purchases("CDNOW_sample.txt", 0, 2, 4).values().map(|p| calibration(p)).collect()
}

fn full() -> Vec<Rfm> {
    purchases("CDNOW_master.txt", 0, 1, 3).values().map(|p| calibration(p)).collect()
}

fn assert_near(what: &str, got: f64, want: f64) {
    assert!((got / want - 1.0).abs() <= TOLERANCE, "{what}: got {got}, reference {want}");
}

fn assert_bgnbd(fit: &Fit<BgNbd>, [r, alpha, a, b]: [f64; 4]) {
    eprintln!(
        "BG/NBD on {} customers: {:?}, LL {:.2}, {} evaluations",
        fit.customers, fit.params, fit.log_likelihood, fit.evaluations
    );
    assert_near("r", fit.params.r, r);
    assert_near("alpha", fit.params.alpha, alpha);
    assert_near("a", fit.params.a, a);
    assert_near("b", fit.params.b, b);
}

fn assert_gamma_gamma(fit: &Fit<GammaGamma>, [p, q, gamma]: [f64; 3]) {
    eprintln!(
        "Gamma-Gamma on {} customers: {:?}, LL {:.2}, {} evaluations",
        fit.customers, fit.params, fit.log_likelihood, fit.evaluations
    );
    assert_near("p", fit.params.p, p);
    assert_near("q", fit.params.q, q);
    assert_near("gamma", fit.params.gamma, gamma);
}

#[test]
fn calibration_summaries_follow_the_convention() {
    assert_eq!(day_number("19970101"), 0);
    assert_eq!(day_number("19970930"), CALIBRATION_END);
    assert_eq!(day_number("19980630"), HOLDOUT_END);
    let sample = sample();
    assert_eq!(sample.len(), 2357);
    // Every CDNOW customer first bought in 1997's first quarter (days 0..=89).
    assert!(sample.iter().all(|c| c.t >= (CALIBRATION_END - 89) as f64 / 7.0 && c.t_x <= c.t));
    assert_eq!(full().len(), 23_570);
}

#[test]
fn bgnbd_on_the_paper_sample_reproduces_the_paper() {
    let fit = BgNbd::fit(&sample()).unwrap();
    assert_bgnbd(&fit, [0.2426, 4.4136, 0.7929, 2.4259]);
    assert!((fit.log_likelihood - -9582.4).abs() < 0.05, "LL {}", fit.log_likelihood);
}

#[test]
fn bgnbd_on_the_full_file_reproduces_lifetimes() {
    let fit = BgNbd::fit(&full()).unwrap();
    assert_eq!(fit.customers, 23_570);
    assert_bgnbd(&fit, [0.2516, 4.7889, 0.7234, 2.1611]);
}

#[test]
fn gamma_gamma_on_the_paper_sample_reproduces_lifetimes() {
    let fit = GammaGamma::fit(&sample()).unwrap();
    assert_gamma_gamma(&fit, [6.250, 3.744, 15.44]);
}

#[test]
fn gamma_gamma_on_the_full_file_reproduces_lifetimes() {
    let customers = full();
    let fit = GammaGamma::fit(&customers).unwrap();
    // One repeat customer's repeat purchases were all free ($0): it has no likelihood.
    let repeaters = customers.iter().filter(|c| c.x > 0.0).count();
    assert_eq!(fit.customers, repeaters - 1);
    assert_gamma_gamma(&fit, [6.275, 3.625, 14.98]);
}

/// E[purchases in (T, T+t]] computed from the model's definition rather than the paper's closed
/// form: alive with P(alive), then λ ~ Gamma(r+x, α+T) and p ~ Beta(a, b+x), and a fresh BG/NBD
/// process makes E[X(t) | λ, p] = (1 − e^(−λpt))/p purchases. λ integrates out in closed form to
/// (1 − ((α+T)/(α+T+pt))^(r+x))/p; p numerically, by Simpson's rule after u = p^a, which makes
/// the Beta weight p^(a−1)dp = du/a smooth.
fn expected_purchases_by_integration(m: &BgNbd, x: f64, t_x: f64, t: f64, weeks: f64) -> f64 {
    let p_alive = 1.0 / (1.0 + m.a / (m.b + x - 1.0) * ((m.alpha + t) / (m.alpha + t_x)).powf(m.r + x));
    let p_of = |u: f64| u.powf(1.0 / m.a);
    let beta_weight = |u: f64| (1.0 - p_of(u)).powf(m.b + x - 1.0);
    let purchases_if_alive = |u: f64| {
        let p = p_of(u);
        if p == 0.0 {
            (m.r + x) * weeks / (m.alpha + t) // the limit p → 0
        } else {
            (1.0 - (1.0 + p * weeks / (m.alpha + t)).powf(-(m.r + x))) / p
        }
    };
    let simpson = |f: &dyn Fn(f64) -> f64| {
        let n = 20_000;
        let h = 1.0 / n as f64;
        let inner: f64 = (1..n).map(|i| f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 }).sum();
        (f(0.0) + inner + f(1.0)) * h / 3.0
    };
    let expected_if_alive = simpson(&|u| purchases_if_alive(u) * beta_weight(u)) / simpson(&beta_weight);
    p_alive * expected_if_alive
}

#[test]
fn expected_purchases_match_the_model_definition_and_the_paper() {
    let paper = BgNbd { r: 0.2426, alpha: 4.4136, a: 0.7929, b: 2.4259 };
    // The paper's worked example: x = 2, t_x = 30.43, T = 38.86, next 39 weeks: 1.226.
    let customer = Rfm { x: 2.0, t_x: 30.43, t: 38.86, monetary: 0.0 };
    let closed_form = paper.expected_purchases(&customer, 39.0);
    let integrated = expected_purchases_by_integration(&paper, 2.0, 30.43, 38.86, 39.0);
    eprintln!("E[Y(39) | 2, 30.43, 38.86]: closed form {closed_form}, integral {integrated}");
    assert!((closed_form - integrated).abs() < 1e-6 * integrated);
    assert!((closed_form - 1.226).abs() < 5e-4);
    // A heavy, lapsed and brand-new buyer, other horizons.
    for (x, t_x, t, weeks) in [(26.0, 30.86, 31.0, 39.0), (7.0, 5.0, 38.0, 52.0), (1.0, 0.5, 1.0, 10.0)] {
        let c = Rfm { x, t_x, t, monetary: 0.0 };
        let (closed_form, integrated) =
            (paper.expected_purchases(&c, weeks), expected_purchases_by_integration(&paper, x, t_x, t, weeks));
        assert!((closed_form - integrated).abs() < 1e-6 * integrated, "{c:?}: {closed_form} vs {integrated}");
    }
}

#[test]
fn baseline_predictions_are_finite_for_every_real_customer() {
    let customers = full();
    let clv = Clv::fit(&customers).unwrap();
    for c in &customers {
        let p = clv.predict(c, 39.0);
        let values = [p.p_alive, p.expected_purchases, p.p_no_purchase, p.spend_per_purchase, p.spend];
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0), "{c:?}: {p:?}");
        assert!(p.p_no_purchase <= 1.0 && p.p_alive <= 1.0, "{c:?}: {p:?}");
    }
}

/// The BG/NBD + Gamma-Gamma row of cdnow-baselines.md — fitted on each train half, scored on the
/// test half, averaged over the five published splits — with this crate's metrics and its
/// P(no purchase) as churn probability: both the models' predictions and the metric definitions
/// must agree with the reference for this to hold.
#[test]
fn baseline_row_of_the_reference_table_is_reproduced() {
    let purchases = purchases("CDNOW_master.txt", 0, 1, 3);
    let splits = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/splits");
    let ids = |seed: usize, half: &str| -> Vec<String> {
        let text = std::fs::read_to_string(splits.join(format!("cdnow_seed{seed}_{half}.txt"))).unwrap();
        text.split_whitespace().map(str::to_string).collect()
    };
    let mut sums = [0.0; 6];
    for seed in 0..5 {
        let train: Vec<Rfm> = ids(seed, "train").iter().map(|id| calibration(&purchases[id])).collect();
        let clv = Clv::fit(&train).unwrap();
        let (mut predicted, mut actual, mut p_churn, mut churned) = (vec![], vec![], vec![], vec![]);
        for id in ids(seed, "test") {
            let prediction = clv.predict(&calibration(&purchases[&id]), HOLDOUT_WEEKS);
            let holdout: Vec<f64> = purchases[&id]
                .iter()
                .filter(|(day, _)| (CALIBRATION_END + 1..=HOLDOUT_END).contains(day))
                .map(|p| p.1)
                .collect();
            predicted.push(prediction.spend);
            actual.push(holdout.iter().sum());
            p_churn.push(prediction.p_no_purchase);
            churned.push(holdout.is_empty());
        }
        let row = [
            ltv::normalized_gini(&predicted, &actual),
            ltv::spearman(&predicted, &actual),
            ltv::decile_mape(&predicted, &actual),
            ltv::total_ratio(&predicted, &actual),
            ltv::top_share(&predicted, &actual, 0.1),
            binary::auc(&p_churn, &churned),
        ];
        sums.iter_mut().zip(row).for_each(|(sum, value)| *sum += value / 5.0);
    }
    // norm. Gini, Spearman, decile MAPE, Σpred/Σact, top-10% share, churn AUC, as printed.
    let reference = [0.668, 0.420, 0.218, 0.824, 0.514, 0.746];
    eprintln!("baseline row over 5 splits: {sums:.4?} (reference {reference:?})");
    for (got, want) in sums.iter().zip(reference) {
        assert!((got - want).abs() <= 0.002, "{sums:?} vs {reference:?}");
    }
}
