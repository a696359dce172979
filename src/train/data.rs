//! What a model is trained on: customers' input tensors and their three labels, checked before any
//! work starts, and the seeded split into training and validation customers.

use super::distill::SoftTargets;
use crate::engine::Batch;
use crate::error::{Error, Result};
use crate::model::graph::InputSizes;
use crate::rng::Rng;

/// One label per customer for each head.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Targets {
    /// Spend over the LTV horizon, ≥ 0 (the ZILN label; 0 = no purchase).
    pub spend: Vec<f32>,
    /// 1.0 = no purchase in the churn horizon, 0.0 = purchased (values between are soft labels).
    pub churned: Vec<f32>,
    /// Value segment, a class in 0..K.
    pub segment: Vec<u32>,
    /// A teacher's outputs to distill from, beside the labels (see `distill`).
    pub soft: Option<SoftTargets>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainData {
    /// `seq [B, C, T]`, `static [B, F]`.
    pub inputs: Batch,
    pub targets: Targets,
}

impl TrainData {
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Checks that the data fits a model with `sizes` inputs and `segments` classes: one label of
    /// each kind per customer, spend finite and ≥ 0, churn labels in [0, 1], classes below K.
    /// (The Batch itself only ever holds finite inputs.)
    pub fn check(&self, sizes: InputSizes, segments: usize) -> Result<()> {
        if self.inputs.sizes != sizes {
            return Err(Error::Input(format!(
                "training inputs have sizes {:?}; the model needs {sizes:?}",
                self.inputs.sizes
            )));
        }
        let t = &self.targets;
        for (what, len) in [("spend", t.spend.len()), ("churned", t.churned.len()), ("segment", t.segment.len())] {
            if len != self.len() {
                return Err(Error::Input(format!("{len} {what} labels for {} customers", self.len())));
            }
        }
        let bad = |what: &str, i: usize, v: &dyn std::fmt::Display, need: &str| {
            Err(Error::Input(format!("{what} label of customer #{i} is {v}; it must be {need}")))
        };
        if let Some(i) = t.spend.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return bad("spend", i, &t.spend[i], "finite and ≥ 0");
        }
        if let Some(i) = t.churned.iter().position(|c| !(0.0..=1.0).contains(c)) {
            return bad("churned", i, &t.churned[i], "in [0, 1]");
        }
        if let Some(i) = t.segment.iter().position(|&s| s as usize >= segments) {
            return bad("segment", i, &t.segment[i], &format!("a class below {segments}"));
        }
        if let Some(soft) = &t.soft {
            let n = self.len();
            for (what, v, per) in
                [("ltv", &soft.ltv, 3), ("churn", &soft.churn, 1), ("segment", &soft.segment, segments)]
            {
                if v.len() != n * per {
                    return Err(Error::Input(format!("{} teacher {what} logits for {n} customers", v.len())));
                }
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::Input(format!("teacher {what} logit #{i} is {} (not finite)", v[i])));
                }
            }
            if !(soft.weight.is_finite() && soft.weight >= 0.0) {
                return Err(Error::Input(format!("distillation weight {} must be finite and ≥ 0", soft.weight)));
            }
        }
        Ok(())
    }

    /// (training, validation) customers: `validation_fraction` of them (at least one, leaving at least
    /// one for training) chosen by a shuffle seeded with `seed` — the split `train` makes.
    pub fn split(&self, validation_fraction: f64, seed: u64) -> Result<(TrainData, TrainData)> {
        let (train, validation) = split_indices(self.len(), validation_fraction, seed)?;
        Ok((self.select(&train)?, self.select(&validation)?))
    }

    fn select(&self, rows: &[usize]) -> Result<TrainData> {
        let mut inputs = Batch::with_capacity(self.inputs.sizes, rows.len());
        for &i in rows {
            inputs.push(self.inputs.seq_row(i), self.inputs.stat_row(i))?;
        }
        let t = &self.targets;
        let pick = |v: &[f32], per: usize| rows.iter().flat_map(|&i| v[i * per..(i + 1) * per].to_vec()).collect();
        let targets = Targets {
            spend: rows.iter().map(|&i| t.spend[i]).collect(),
            churned: rows.iter().map(|&i| t.churned[i]).collect(),
            segment: rows.iter().map(|&i| t.segment[i]).collect(),
            soft: t.soft.as_ref().map(|s| SoftTargets {
                weight: s.weight,
                ltv: pick(&s.ltv, 3),
                churn: pick(&s.churn, 1),
                segment: pick(&s.segment, s.segment.len() / t.spend.len().max(1)),
            }),
        };
        Ok(TrainData { inputs, targets })
    }
}

/// Row indices (training, validation), each in ascending order.
pub(crate) fn split_indices(n: usize, validation_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(Error::Input(format!("validation fraction {validation_fraction} is outside (0, 1)")));
    }
    if n < 2 {
        return Err(Error::Input(format!("training needs at least 2 customers (one to validate on), got {n}")));
    }
    let n_validation = ((n as f64 * validation_fraction).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut Rng::derive(seed, "validation-split"));
    let (mut validation, mut train) = (order[..n_validation].to_vec(), order[n_validation..].to_vec());
    validation.sort_unstable();
    train.sort_unstable();
    Ok((train, validation))
}

/// Fisher–Yates with the project's fixed generator: the same permutation for a seed, forever.
pub(crate) fn shuffle(v: &mut [usize], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let (t, v) = split_indices(100, 0.2, 7).unwrap();
        assert_eq!((t.len(), v.len()), (80, 20));
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split_indices(100, 0.2, 7).unwrap(), (t.clone(), v.clone()));
        assert_ne!(split_indices(100, 0.2, 8).unwrap().1, v);
        assert_eq!(split_indices(2, 0.01, 1).unwrap().1.len(), 1, "at least one validation customer");
        assert_eq!(split_indices(3, 0.99, 1).unwrap().0.len(), 1, "at least one training customer");
    }

    #[test]
    fn split_rejects_degenerate_requests() {
        for (n, f) in [(10, 0.0), (10, 1.0), (10, f64::NAN), (1, 0.5), (0, 0.5)] {
            assert!(matches!(split_indices(n, f, 0), Err(Error::Input(_))), "{n} {f}");
        }
    }
}
