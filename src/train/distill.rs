//! Knowledge distillation: a student learns from a teacher model's outputs (soft targets) beside the
//! labels. Per customer, the distillation loss is the KL divergence from the teacher's predicted
//! distributions to the student's, head by head:
//! - LTV: the purchase Bernoulli, plus — weighted by the teacher's purchase probability — the
//!   lognormal of spend (closed form: ln(σs/σt) + (σt² + (μt − μs)²)/(2σs²) − ½);
//! - churn: the Bernoulli; segment: the categorical.
//!
//! Each term is zero exactly when the student matches the teacher, so the added loss reads as "how
//! far from the teacher" and the labels keep their own scale.

use super::loss::bce_with_logits;
use crate::data::feature_spec::SideData;
use crate::data::transactions::Customer;
use crate::engine::HeadValues;
use crate::engine::scores::{sigmoid, softplus, ziln_sigma};
use crate::error::{Error, Result};
use crate::eval::evaluate::feature_spec;
use crate::model::tensor::{Tensor, TensorData};
use crate::model::{Model, Precision};

/// The teacher's head logits for every training customer (row-major per customer), and how much
/// the distillation loss counts beside the labels' loss.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTargets {
    pub weight: f64,
    /// `[n, 3]`: logit p, mu, raw sigma.
    pub ltv: Vec<f32>,
    /// `[n]`.
    pub churn: Vec<f32>,
    /// `[n, K]`.
    pub segment: Vec<f32>,
}

/// One customer's head logits (student or teacher).
pub(crate) struct Heads<'a> {
    pub ltv: [f64; 3],
    pub churn: f64,
    pub segment: &'a [f64],
}

/// The KL divergence from `teacher` to `student` over the three heads, and its gradient with respect
/// to the student's logits (written into `d_ltv`, `d_churn`, `d_segment`).
pub(crate) fn divergence(
    student: &Heads,
    teacher: &Heads,
    d_ltv: &mut [f64; 3],
    d_churn: &mut f64,
    d_segment: &mut [f64],
) -> f64 {
    let bernoulli = |s: f64, t: f64| {
        let p = sigmoid(t);
        let (loss, grad) = bce_with_logits(s, p);
        // Subtracting the teacher's own entropy turns the cross-entropy into a KL divergence.
        (loss - bce_with_logits(t, p).0, grad)
    };
    let (purchase, d_p) = bernoulli(student.ltv[0], teacher.ltv[0]);
    let (churn, d_c) = bernoulli(student.churn, teacher.churn);
    *d_churn = d_c;
    let p = sigmoid(teacher.ltv[0]);
    let (sigma_s, sigma_t) = (ziln_sigma(student.ltv[2]), ziln_sigma(teacher.ltv[2]));
    let (mu_s, mu_t) = (student.ltv[1], teacher.ltv[1]);
    let spread = sigma_t * sigma_t + (mu_t - mu_s).powi(2);
    let lognormal = (sigma_s / sigma_t).ln() + spread / (2.0 * sigma_s * sigma_s) - 0.5;
    // As in the ZILN loss: no gradient reaches raw sigma where the clamp holds sigma constant.
    let d_sigma_d_raw = if sigma_s == softplus(student.ltv[2]) { sigmoid(student.ltv[2]) } else { 0.0 };
    let d_sigma = 1.0 / sigma_s - spread / sigma_s.powi(3);
    *d_ltv = [d_p, p * (mu_s - mu_t) / (sigma_s * sigma_s), p * d_sigma * d_sigma_d_raw];
    let segment = categorical(student.segment, teacher.segment, d_segment);
    purchase + p * lognormal + churn + segment
}

/// KL(softmax(t) ‖ softmax(s)); `grad` gets softmax(s) − softmax(t).
fn categorical(s: &[f64], t: &[f64], grad: &mut [f64]) -> f64 {
    let log_softmax = |z: &[f64]| -> Vec<f64> {
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let log_total = max + z.iter().map(|&v| (v - max).exp()).sum::<f64>().ln();
        z.iter().map(|&v| v - log_total).collect()
    };
    let (ls, lt) = (log_softmax(s), log_softmax(t));
    let mut kl = 0.0;
    for k in 0..s.len() {
        let p = lt[k].exp();
        kl += p * (lt[k] - ls[k]);
        grad[k] = ls[k].exp() - p;
    }
    kl
}

/// The teacher's soft targets for `customers`, its features built by its own FeatureSpec (so a
/// teacher with other features than the student still sees what it was trained on). The teacher
/// must be a float model whose spec has the student's cutoff and segment count.
pub fn soft_targets(
    teacher: &Model,
    side: &SideData,
    customers: &[Customer],
    cutoff_day: i32,
    segments: usize,
    weight: f64,
) -> Result<SoftTargets> {
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(Error::Input(format!("distillation weight {weight} must be finite and ≥ 0")));
    }
    if teacher.precision() == Precision::Int8 {
        return Err(Error::Input("the teacher must be a float model (fp32 or fp16), not int8".into()));
    }
    let spec = feature_spec(teacher)?;
    if spec.cutoff_day()? != cutoff_day {
        return Err(Error::Input(format!(
            "the teacher was trained at cutoff {}, the student's differs: its outputs would predict another period",
            spec.cutoff
        )));
    }
    let k = teacher.graph().segments(&teacher.shapes);
    if k != segments {
        return Err(Error::Input(format!("the teacher has {k} segments, the student {segments}")));
    }
    let file = teacher.to_model_file();
    // The trainer's forward pass runs in f32: fp16 teachers are widened exactly.
    let weights = file
        .weights
        .iter()
        .map(|(n, t)| (n.clone(), Tensor { shape: t.shape.clone(), data: TensorData::F32(t.to_f32()) }))
        .collect();
    let inputs = spec.featurizer(side)?.batch(customers)?;
    let heads = super::predict(teacher.graph(), &weights, &inputs)?;
    let logits = |h: HeadValues| match h {
        HeadValues::Logits(v) => v,
        HeadValues::Accumulators(_) => unreachable!("the trainer's forward pass gives float logits"),
    };
    Ok(SoftTargets { weight, ltv: logits(heads.ltv), churn: logits(heads.churn), segment: logits(heads.segment) })
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{Tol, check};
    use super::*;

    fn run(x: &[f64], teacher: &Heads) -> (f64, Vec<f64>) {
        let student = Heads { ltv: [x[0], x[1], x[2]], churn: x[3], segment: &x[4..] };
        let (mut dl, mut dc, mut ds) = ([0.0; 3], 0.0, vec![0.0; x.len() - 4]);
        let loss = divergence(&student, teacher, &mut dl, &mut dc, &mut ds);
        (loss, dl.into_iter().chain([dc]).chain(ds).collect())
    }

    #[test]
    fn zero_at_the_teacher_and_positive_elsewhere() {
        let t_segment = [0.3, -1.0, 2.0];
        let teacher = Heads { ltv: [0.4, 3.0, 0.2], churn: -0.7, segment: &t_segment };
        let at = [0.4, 3.0, 0.2, -0.7, 0.3, -1.0, 2.0];
        let (loss, grad) = run(&at, &teacher);
        assert!(loss.abs() < 1e-12 && grad.iter().all(|g| g.abs() < 1e-12), "{loss} {grad:?}");
        for i in 0..at.len() {
            let mut x = at;
            x[i] += 0.5;
            assert!(run(&x, &teacher).0 > 0.0, "coordinate {i}");
        }
    }

    #[test]
    fn gradients() {
        let t_segment = [1.0, 0.0, -0.5, 0.2];
        let teacher = Heads { ltv: [-0.3, 2.5, 0.8], churn: 1.2, segment: &t_segment };
        for x in [[0.1, 1.0, -0.4, 0.3, 0.0, 0.5, -1.0, 2.0], [2.0, 4.0, 1.5, -2.0, 3.0, 0.0, 0.0, -3.0]] {
            let (_, grad) = run(&x, &teacher);
            check(&x, &grad, 1e-5, Tol { abs: 1e-7, rel: 1e-6 }, |v| Some(run(v, &teacher).0))
                .unwrap_or_else(|e| panic!("{x:?}: {e}"));
        }
    }
}
