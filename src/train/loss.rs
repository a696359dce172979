//! The heads' losses, on logits: the Sigmoid and Softmax of the graph belong to the scoring epilogue
//! (src/engine/scores.rs), which turns the same logits into scores — p_purchase = sigmoid(logit p),
//! ltv = p_purchase · exp(mu + sigma²/2) with sigma = ziln_sigma(raw sigma), churn = sigmoid,
//! segment = softmax. Every loss is computed in f64 (a few values per customer, so it costs nothing)
//! and is numerically stable for any finite logit.

use super::data::Targets;
use super::distill::{Heads, divergence};

pub use crate::engine::scores::{SIGMA_CEILING, SIGMA_FLOOR};
use crate::engine::scores::{sigmoid, softplus, ziln_sigma};

/// ln(2π).
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// How much each head counts in the multi-task loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub ltv: f64,
    pub churn: f64,
    pub segment: f64,
}

/// Per-head losses (unweighted), the distillation loss (0 without a teacher) and their weighted sum,
/// either summed or averaged over customers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Losses {
    pub total: f64,
    pub ltv: f64,
    pub churn: f64,
    pub segment: f64,
    pub distill: f64,
}

impl Losses {
    fn new(sums: [f64; 4], w: &LossWeights, distill_weight: f64) -> Self {
        let [ltv, churn, segment, distill] = sums;
        let total = w.ltv * ltv + w.churn * churn + w.segment * segment + distill_weight * distill;
        Losses { total, ltv, churn, segment, distill }
    }

    pub fn add(&mut self, other: &Losses) {
        self.total += other.total;
        self.ltv += other.ltv;
        self.churn += other.churn;
        self.segment += other.segment;
        self.distill += other.distill;
    }

    /// Sums over `n` customers → means.
    pub fn mean(self, n: usize) -> Losses {
        let d = n.max(1) as f64;
        Losses {
            total: self.total / d,
            ltv: self.ltv / d,
            churn: self.churn / d,
            segment: self.segment / d,
            distill: self.distill / d,
        }
    }
}

/// Binary cross-entropy of a logit against a label in [0, 1]: (loss, ∂loss/∂logit).
/// −y·ln σ(x) − (1−y)·ln(1−σ(x)) = max(x, 0) − x·y + ln(1 + e^−|x|).
pub fn bce_with_logits(logit: f64, label: f64) -> (f64, f64) {
    (logit.max(0.0) - logit * label + (-logit.abs()).exp().ln_1p(), sigmoid(logit) - label)
}

/// Softmax cross-entropy of logits against `class`: returns the loss and writes ∂loss/∂logits
/// (softmax − one-hot) into `grad`.
pub fn softmax_cross_entropy(logits: &[f64], class: usize, grad: &mut [f64]) -> f64 {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z));
    let log_total = max + logits.iter().map(|&z| (z - max).exp()).sum::<f64>().ln();
    for (k, (g, &z)) in grad.iter_mut().zip(logits).enumerate() {
        *g = (z - log_total).exp() - if k == class { 1.0 } else { 0.0 };
    }
    log_total - logits[class]
}

/// Zero-inflated lognormal negative log-likelihood of one customer's spend (Wang, Liu & Miao 2019),
/// exactly as `zero_inflated_lognormal_loss` of Google's lifetime_value: logits (logit p, mu, raw sigma);
/// classification = BCE(spend > 0, logit p); sigma = softplus(raw sigma) within [√1e-7, SIGMA_CEILING]
/// (lifetime_value has the floor; the ceiling is ltvx's, see [`SIGMA_CEILING`]);
/// regression = −ln LogNormal(mu, sigma).pdf(spend) for spend > 0, else 0. Returns (loss, ∂loss/∂logits).
pub fn ziln(logits: [f64; 3], spend: f64) -> (f64, [f64; 3]) {
    let [logit_p, mu, raw_sigma] = logits;
    let positive = spend > 0.0;
    let (classification, d_logit_p) = bce_with_logits(logit_p, if positive { 1.0 } else { 0.0 });
    if !positive {
        return (classification, [d_logit_p, 0.0, 0.0]);
    }
    // The epilogue's sigma; where the clamp holds it constant, no gradient reaches raw sigma (TF's
    // maximum does the same).
    let sigma = ziln_sigma(raw_sigma);
    let d_sigma_d_raw = if sigma == softplus(raw_sigma) { sigmoid(raw_sigma) } else { 0.0 };
    let log_spend = spend.ln();
    let z = (log_spend - mu) / sigma;
    let regression = log_spend + sigma.ln() + 0.5 * LN_2PI + 0.5 * z * z;
    let d_sigma = (1.0 - z * z) / sigma;
    (classification + regression, [d_logit_p, -z / sigma, d_sigma * d_sigma_d_raw])
}

/// The three heads' logits for a set of customers, in the trainer's layout `[units, B]`.
pub(crate) struct HeadLogits<'a> {
    pub ltv: &'a [f32],
    pub churn: &'a [f32],
    pub segment: &'a [f32],
}

/// Where the multi-task loss's gradient goes: ∂(scale · total)/∂logits, layout as `HeadLogits`.
pub(crate) struct HeadGrads<'a> {
    pub scale: f64,
    pub ltv: &'a mut [f32],
    pub churn: &'a mut [f32],
    pub segment: &'a mut [f32],
}

/// Losses of the customers `rows` of `targets` (column b of the logits is customer `rows[b]`),
/// summed over them; with `grads`, also the gradient of the weighted total.
pub(crate) fn multitask(
    logits: &HeadLogits,
    targets: &Targets,
    rows: &[usize],
    weights: &LossWeights,
    mut grads: Option<HeadGrads>,
) -> Losses {
    let batch = rows.len();
    let classes = logits.segment.len() / batch.max(1);
    let mut sums = [0.0f64; 4];
    let (mut z, mut g) = (vec![0.0; classes], vec![0.0; classes]);
    let (mut t_segment, mut d_segment) = (vec![0.0; classes], vec![0.0; classes]);
    let distill_weight = targets.soft.as_ref().map_or(0.0, |s| s.weight);
    for (b, &row) in rows.iter().enumerate() {
        let at = |head: &[f32], unit: usize| head[unit * batch + b] as f64;
        let student_ltv = [0, 1, 2].map(|u| at(logits.ltv, u));
        let (l_ltv, mut g_ltv) = ziln(student_ltv, targets.spend[row] as f64);
        let (l_churn, mut g_churn) = bce_with_logits(at(logits.churn, 0), targets.churned[row] as f64);
        for (k, z) in z.iter_mut().enumerate() {
            *z = at(logits.segment, k);
        }
        let l_segment = softmax_cross_entropy(&z, targets.segment[row] as usize, &mut g);
        // Head weights scale the labels' gradients; the distillation term has its own weight.
        g_ltv.iter_mut().for_each(|v| *v *= weights.ltv);
        g_churn *= weights.churn;
        g.iter_mut().for_each(|v| *v *= weights.segment);
        let l_distill = match &targets.soft {
            None => 0.0,
            Some(soft) => {
                let teacher_ltv = [0, 1, 2].map(|u| soft.ltv[row * 3 + u] as f64);
                for (k, t) in t_segment.iter_mut().enumerate() {
                    *t = soft.segment[row * classes + k] as f64;
                }
                let teacher = Heads { ltv: teacher_ltv, churn: soft.churn[row] as f64, segment: &t_segment };
                let student = Heads { ltv: student_ltv, churn: at(logits.churn, 0), segment: &z };
                let (mut d_ltv, mut d_churn) = ([0.0; 3], 0.0);
                let l = divergence(&student, &teacher, &mut d_ltv, &mut d_churn, &mut d_segment);
                g_ltv.iter_mut().zip(d_ltv).for_each(|(v, d)| *v += soft.weight * d);
                g_churn += soft.weight * d_churn;
                g.iter_mut().zip(&d_segment).for_each(|(v, d)| *v += soft.weight * d);
                l
            }
        };
        for (sum, l) in sums.iter_mut().zip([l_ltv, l_churn, l_segment, l_distill]) {
            *sum += l;
        }
        if let Some(d) = grads.as_mut() {
            let put = |head: &mut [f32], unit: usize, v: f64| head[unit * batch + b] = (d.scale * v) as f32;
            for (u, &v) in g_ltv.iter().enumerate() {
                put(d.ltv, u, v);
            }
            put(d.churn, 0, g_churn);
            for (k, &v) in g.iter().enumerate() {
                put(d.segment, k, v);
            }
        }
    }
    Losses::new(sums, weights, distill_weight)
}

#[cfg(test)]
mod tests {
    use super::super::gradcheck::{Tol, check};
    use super::*;
    use crate::engine::{Epilogue, HeadOutputs, HeadValues};

    const TOL: Tol = Tol { abs: 1e-7, rel: 1e-6 };
    const H: f64 = 1e-5;

    fn softplus_inverse(s: f64) -> f64 {
        s + (-(-s).exp_m1()).ln()
    }

    #[test]
    fn ziln_values_by_hand() {
        // logit p = 0 → BCE = ln 2 either way; sigma = 1, spend = e → z = 1.
        let one = softplus_inverse(1.0);
        let (loss, _) = ziln([0.0, 0.0, one], std::f64::consts::E);
        assert!((loss - (2f64.ln() + 1.0 + 0.5 * LN_2PI + 0.5)).abs() < 1e-12, "{loss}");
        assert_eq!(ziln([0.0, 5.0, one], 0.0).0, 2f64.ln(), "zero spend: classification only");
    }

    /// lifetime_value's own test oracle, written the other way round: zero spend costs softplus(p),
    /// positive spend softplus(−p) − the lognormal log-density.
    #[test]
    fn ziln_matches_the_lifetime_value_formulation() {
        for (logits, spend) in
            [([0.3, 1.2, -0.4], 7.5), ([-2.0, 3.0, 1.5], 0.0), ([1.0, -0.5, -30.0], 0.2), ([4.0, 6.0, 0.1], 900.0)]
        {
            let scale = softplus(logits[2]).clamp(SIGMA_FLOOR, SIGMA_CEILING);
            let expected = if spend == 0.0 {
                softplus(logits[0])
            } else {
                let log_pdf = -(spend * scale * (2.0 * std::f64::consts::PI).sqrt()).ln()
                    - (spend.ln() - logits[1]).powi(2) / (2.0 * scale * scale);
                softplus(-logits[0]) - log_pdf
            };
            let got = ziln(logits, spend).0;
            assert!(
                (got - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                "{logits:?} {spend}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn ziln_gradients() {
        for (logits, spend) in [
            ([0.3, 1.2, -0.4], 7.5),
            ([-2.0, 3.0, 1.5], 0.0),
            ([2.5, 0.1, 0.7], 0.01),
            ([0.0, 4.0, -25.0], 50.0), // sigma at its floor: no gradient for raw sigma
        ] {
            let (_, grad) = ziln(logits, spend);
            check(&logits, &grad, H, TOL, |x| Some(ziln([x[0], x[1], x[2]], spend).0))
                .unwrap_or_else(|e| panic!("{logits:?} {spend}: {e}"));
        }
        assert_eq!(ziln([0.0, 4.0, -25.0], 50.0).1[2], 0.0);
    }

    #[test]
    fn bce_gradients_and_extremes() {
        for (x, y) in [(0.7, 1.0), (-1.3, 0.0), (2.0, 0.25), (-30.0, 1.0)] {
            check(&[x], &[bce_with_logits(x, y).1], H, TOL, |v| Some(bce_with_logits(v[0], y).0)).unwrap();
        }
        assert_eq!(bce_with_logits(1000.0, 0.0), (1000.0, 1.0));
        assert_eq!(bce_with_logits(-1000.0, 0.0), (0.0, 0.0));
        assert_eq!(bce_with_logits(-1000.0, 1.0).0, 1000.0);
    }

    #[test]
    fn softmax_cross_entropy_gradients_and_extremes() {
        let z = [0.5, -1.0, 2.0, 0.0];
        let mut g = [0.0; 4];
        softmax_cross_entropy(&z, 2, &mut g);
        check(&z, &g, H, TOL, |x| Some(softmax_cross_entropy(x, 2, &mut [0.0; 4]))).unwrap();
        assert!(g.iter().sum::<f64>().abs() < 1e-12, "softmax − one-hot sums to zero");
        let loss = softmax_cross_entropy(&[1000.0, -1000.0], 1, &mut g[..2]);
        assert_eq!((loss, g[0], g[1]), (2000.0, 1.0, -1.0));
    }

    /// The maximum-likelihood constant for a population is where the mean ZILN gradient vanishes, and
    /// the engine's epilogue turns those logits into the mean of the fitted distribution.
    #[test]
    fn ziln_optimum_agrees_with_the_scoring_epilogue() {
        let spends: [f64; 8] = [0.0, 0.0, 3.0, 10.0, 25.0, 0.0, 80.0, 7.0];
        let logs: Vec<f64> = spends.iter().filter(|&&s| s > 0.0).map(|s| s.ln()).collect();
        let p = logs.len() as f64 / spends.len() as f64;
        let mu = logs.iter().sum::<f64>() / logs.len() as f64;
        let sigma = (logs.iter().map(|l| (l - mu).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        let logits = [(p / (1.0 - p)).ln(), mu, softplus_inverse(sigma)];
        for u in 0..3 {
            let mean_grad = spends.iter().map(|&s| ziln(logits, s).1[u]).sum::<f64>() / spends.len() as f64;
            assert!(mean_grad.abs() < 1e-9, "logit {u}: {mean_grad}");
        }
        let heads = HeadOutputs {
            ltv: HeadValues::Logits(logits.map(|v| v as f32).to_vec()),
            churn: HeadValues::Logits(vec![0.0]),
            segment: HeadValues::Logits(vec![0.0, 0.0]),
        };
        let ltv = Epilogue::default().apply(&heads, 2).ltv[0] as f64;
        let expected = p * (mu + sigma * sigma / 2.0).exp();
        assert!((ltv - expected).abs() < 1e-5 * expected, "{ltv} vs {expected}");
    }

    #[test]
    fn multitask_weights_scales_and_lays_out_gradients() {
        let targets =
            Targets { spend: vec![0.0, 12.0, 4.0], churned: vec![1.0, 0.0, 0.0], segment: vec![0, 0, 1], soft: None };
        let rows = [2, 1]; // two customers, in the trainer's [units, B] layout
        let ltv = [0.1, -0.2, 1.5, 2.5, 0.3, 0.4];
        let (churn, segment) = ([0.5, -0.5], [1.0, 0.0, -1.0, 2.0]);
        let logits = HeadLogits { ltv: &ltv, churn: &churn, segment: &segment };
        let w = LossWeights { ltv: 1.0, churn: 2.0, segment: 0.5 };
        let (mut d_ltv, mut d_churn, mut d_segment) = ([0.0; 6], [0.0; 2], [0.0; 4]);
        let grads = HeadGrads { scale: 0.5, ltv: &mut d_ltv, churn: &mut d_churn, segment: &mut d_segment };
        let sums = multitask(&logits, &targets, &rows, &w, Some(grads));

        let (l0, g0) = ziln([0.1, 1.5, 0.3], 4.0);
        let (l1, g1) = ziln([-0.2, 2.5, 0.4], 12.0);
        let (c0, c1) = (bce_with_logits(0.5, 0.0), bce_with_logits(-0.5, 0.0));
        let (mut s0, mut s1) = ([0.0; 2], [0.0; 2]);
        let seg = softmax_cross_entropy(&[1.0, -1.0], 1, &mut s0) + softmax_cross_entropy(&[0.0, 2.0], 0, &mut s1);
        assert!((sums.ltv - (l0 + l1)).abs() < 1e-6 && (sums.churn - (c0.0 + c1.0)).abs() < 1e-6);
        assert!((sums.total - (sums.ltv + 2.0 * sums.churn + 0.5 * seg)).abs() < 1e-6);
        let close = |a: f32, b: f64| assert!((a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        close(d_ltv[0], 0.5 * g0[0]);
        close(d_ltv[5], 0.5 * g1[2]);
        close(d_churn[1], 0.5 * 2.0 * c1.1);
        close(d_segment[1], 0.5 * 0.5 * s1[0]);
        close(d_segment[2], 0.5 * 0.5 * s0[1]);
    }
}
