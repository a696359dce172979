//! What a model says about each customer, and the shared host epilogue that turns head outputs into
//! it — the same code for every backend, so that identical head accumulators give identical scores.

/// One head's raw outputs for a batch, row-major `[B, units]`.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadValues {
    /// Float logits (float heads).
    Logits(Vec<f32>),
    /// i32 accumulators of an int8 head: the end of the integer pipeline.
    Accumulators(Vec<i32>),
}

/// The three heads' raw outputs: ltv `[B, 3]`, churn `[B, 1]`, segment `[B, K]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOutputs {
    pub ltv: HeadValues,
    pub churn: HeadValues,
    pub segment: HeadValues,
}

/// Per-customer scores, column-wise.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scores {
    /// Expected spend: p_purchase · exp(mu + sigma²/2).
    pub ltv: Vec<f32>,
    /// Probability of any purchase (the zero-inflation part of the LTV head).
    pub p_purchase: Vec<f32>,
    pub churn_probability: Vec<f32>,
    /// argmax of `p_segment` (the first on ties).
    pub segment: Vec<u32>,
    /// `[B, K]` segment probabilities.
    pub p_segment: Vec<f32>,
    pub segments: usize,
}

impl Scores {
    pub fn len(&self) -> usize {
        self.ltv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ltv.is_empty()
    }

    pub fn p_segment_row(&self, i: usize) -> &[f32] {
        &self.p_segment[i * self.segments..(i + 1) * self.segments]
    }

    /// Appends the customers of `other` (scores of the same model).
    pub fn append(&mut self, other: &Scores) {
        self.segments = other.segments;
        self.ltv.extend_from_slice(&other.ltv);
        self.p_purchase.extend_from_slice(&other.p_purchase);
        self.churn_probability.extend_from_slice(&other.churn_probability);
        self.segment.extend_from_slice(&other.segment);
        self.p_segment.extend_from_slice(&other.p_segment);
    }

    /// The customers `range` as scores of their own.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Scores {
        let k = self.segments;
        Scores {
            ltv: self.ltv[range.clone()].to_vec(),
            p_purchase: self.p_purchase[range.clone()].to_vec(),
            churn_probability: self.churn_probability[range.clone()].to_vec(),
            segment: self.segment[range.clone()].to_vec(),
            p_segment: self.p_segment[range.start * k..range.end * k].to_vec(),
            segments: k,
        }
    }
}

/// Lower bound of the lognormal sigma: √(Keras epsilon = 1e-7), as Google's lifetime_value has it.
pub const SIGMA_FLOOR: f64 = 3.162_277_660_168_379_4e-4;
/// Upper bound of the lognormal sigma. The expected value exp(mu + sigma²/2) explodes with sigma: a
/// model extrapolating for one unusual customer could otherwise predict a million where a thousand
/// is plausible (seen on CDNOW), and a sum or a calibration over customers would follow it. At 1.5
/// the mean is at most e^(1.5²/2) ≈ 3× the median: ceilings of 3 and 2 still over-predicted the top
/// decile on CDNOW (docs/ACCURACY.md records the comparison).
pub const SIGMA_CEILING: f64 = 1.5;

/// The lognormal sigma of the LTV head from its raw output; the training loss uses the same.
pub fn ziln_sigma(raw: f64) -> f64 {
    softplus(raw).clamp(SIGMA_FLOOR, SIGMA_CEILING)
}

/// Dequantization factors of the int8 heads (`acc_scale` per output), `None` for float heads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Epilogue {
    pub ltv: Option<Vec<f32>>,
    pub churn: Option<Vec<f32>>,
    pub segment: Option<Vec<f32>>,
}

impl Epilogue {
    /// Head values of rows `range` (`width` per row) as float logits.
    fn logits(
        values: &HeadValues,
        scales: &Option<Vec<f32>>,
        range: &std::ops::Range<usize>,
        width: usize,
    ) -> Vec<f32> {
        let span = range.start * width..range.end * width;
        match (values, scales) {
            (HeadValues::Logits(v), _) => v[span].to_vec(),
            (HeadValues::Accumulators(acc), Some(s)) => {
                acc[span].iter().enumerate().map(|(i, &a)| s[i % s.len()] * a as f32).collect()
            }
            (HeadValues::Accumulators(_), None) => unreachable!("an int8 head without scales is rejected at open"),
        }
    }

    pub fn apply(&self, heads: &HeadOutputs, segments: usize) -> Scores {
        let rows = match &heads.churn {
            HeadValues::Logits(v) => v.len(),
            HeadValues::Accumulators(v) => v.len(),
        };
        self.apply_rows(heads, segments, 0..rows)
    }

    /// The scores of rows `range` only (threads take one range each).
    pub fn apply_rows(&self, heads: &HeadOutputs, segments: usize, range: std::ops::Range<usize>) -> Scores {
        let ltv = Self::logits(&heads.ltv, &self.ltv, &range, 3);
        let churn = Self::logits(&heads.churn, &self.churn, &range, 1);
        let seg = Self::logits(&heads.segment, &self.segment, &range, segments);
        let rows = churn.len();
        let mut s = Scores { segments, ..Default::default() };
        s.p_segment.reserve(rows * segments);
        let mut exps: Vec<f64> = Vec::with_capacity(segments);
        for i in 0..rows {
            let (logit_p, mu, raw_sigma) = (ltv[3 * i] as f64, ltv[3 * i + 1] as f64, ltv[3 * i + 2] as f64);
            let sigma = ziln_sigma(raw_sigma);
            s.p_purchase.push(sigmoid(logit_p) as f32);
            // In log space (ln p = −softplus(−logit p)): a vanishing p times a huge exp is a small
            // number, not 0·∞ = NaN.
            s.ltv.push((mu + sigma * sigma / 2.0 - softplus(-logit_p)).exp() as f32);
            s.churn_probability.push(sigmoid(churn[i] as f64) as f32);
            let row = &seg[i * segments..(i + 1) * segments];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            exps.clear();
            exps.extend(row.iter().map(|&x| (x as f64 - max).exp()));
            let total: f64 = exps.iter().sum();
            let mut best = 0;
            for (k, e) in exps.iter().enumerate() {
                s.p_segment.push((e / total) as f32);
                if *e > exps[best] {
                    best = k;
                }
            }
            s.segment.push(best as u32);
        }
        s
    }
}

/// An f32 in its shortest round-trip form, `null` when not finite (an overflowing LTV): how scores
/// appear in JSON output, files and server responses alike. Written in place by zmij (serde_json's
/// own float formatter), several times faster than `Display` and without a String per number.
pub struct JsonF32(pub f32);

impl std::fmt::Display for JsonF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_finite() { f.write_str(zmij::Buffer::new().format_finite(self.0)) } else { f.write_str("null") }
    }
}

/// 1 / (1 + e^−x) without overflow; shared with the training losses.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
}

/// ln(1 + e^x) without overflow; shared with the training losses.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epilogue_by_hand() {
        let heads = HeadOutputs {
            ltv: HeadValues::Logits(vec![0.0, 1.0, 0.0]),
            churn: HeadValues::Logits(vec![0.0]),
            segment: HeadValues::Logits(vec![1.0, 1.0, 0.0]),
        };
        let s = Epilogue::default().apply(&heads, 3);
        let sigma = ziln_sigma(0.0); // softplus(0) = ln 2
        assert!((s.ltv[0] as f64 - 0.5 * (1.0 + sigma * sigma / 2.0).exp()).abs() < 1e-6);
        assert_eq!(s.p_purchase[0], 0.5);
        assert_eq!(s.churn_probability[0], 0.5);
        assert_eq!(s.segment[0], 0, "ties go to the first class");
        assert!((s.p_segment.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn accumulators_are_dequantized_per_output() {
        let heads = HeadOutputs {
            ltv: HeadValues::Accumulators(vec![0, 10, -4]),
            churn: HeadValues::Accumulators(vec![-100]),
            segment: HeadValues::Logits(vec![0.0, 3.0]),
        };
        let e = Epilogue { ltv: Some(vec![1.0, 0.1, 0.5]), churn: Some(vec![0.01]), segment: None };
        let s = e.apply(&heads, 2);
        let sigma = ziln_sigma(-2.0);
        assert!((s.ltv[0] as f64 - 0.5 * (1.0 + sigma * sigma / 2.0).exp()).abs() < 1e-6);
        assert!((s.churn_probability[0] as f64 - sigmoid(-1.0)).abs() < 1e-7);
        assert_eq!(s.segment[0], 1);
    }

    #[test]
    fn vanishing_purchase_probability_times_huge_spend_is_not_nan() {
        let heads = HeadOutputs {
            ltv: HeadValues::Logits(vec![-1000.0, 1000.0, 0.0]),
            churn: HeadValues::Logits(vec![0.0]),
            segment: HeadValues::Logits(vec![0.0, 0.0]),
        };
        let s = Epilogue::default().apply(&heads, 2);
        assert!(s.ltv[0].is_finite(), "{}", s.ltv[0]);
        assert_eq!(s.p_purchase[0], 0.0);
    }

    #[test]
    fn extreme_logits_stay_finite() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert!((softplus(1000.0) - 1000.0).abs() < 1e-9);
    }
}
