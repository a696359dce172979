//! AdamW (Loshchilov & Hutter 2019; PyTorch's `torch.optim.AdamW` update), with optional masks that
//! hold pruned weights at exactly zero while the rest trains.

use std::collections::BTreeMap;

use super::params::{Grads, Params};
use crate::error::{Error, Result};
use crate::model::tensor::{TensorData, Weights};

/// Per parameter tensor (by name, e.g. `conv2.weight`): `true` = trainable, `false` = pruned, held at 0.
/// Tensors without an entry train freely.
pub type Masks = BTreeMap<String, Vec<bool>>;

/// Masks that keep the weights that are exactly zero in `weights` at zero (biases are never pruned):
/// the masks for fine-tuning a model pruned by magnitude.
pub fn masks_of_zero_weights(weights: &Weights) -> Masks {
    weights
        .iter()
        .filter(|(name, _)| name.ends_with(".weight"))
        .filter_map(|(name, t)| match &t.data {
            TensorData::F32(v) if v.contains(&0.0) => Some((name.clone(), v.iter().map(|&x| x != 0.0).collect())),
            _ => None,
        })
        .collect()
}

const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;

pub(crate) struct AdamW {
    learning_rate: f32,
    weight_decay: f32,
    steps: i32,
    m: Grads,
    v: Grads,
    /// Per parameter tensor, in `Params` order.
    masks: Vec<Option<Vec<bool>>>,
}

impl AdamW {
    /// Checks `masks` against `params` (known names, right lengths) and zeroes the pruned weights.
    pub fn new(params: &mut Params, learning_rate: f64, weight_decay: f64, masks: &Masks) -> Result<AdamW> {
        if let Some(unknown) = masks.keys().find(|k| !params.names.contains(k)) {
            return Err(Error::Input(format!("mask for {unknown:?}, which is not a parameter of the graph")));
        }
        let mut per_tensor = Vec::with_capacity(params.names.len());
        for (name, values) in params.names.iter().zip(&mut params.values) {
            let mask = masks.get(name);
            if let Some(m) = mask {
                if m.len() != values.len() {
                    return Err(Error::Input(format!("mask for {name} has {} entries for {}", m.len(), values.len())));
                }
                values.iter_mut().zip(m).filter(|(_, keep)| !**keep).for_each(|(w, _)| *w = 0.0);
            }
            per_tensor.push(mask.cloned());
        }
        Ok(AdamW {
            learning_rate: learning_rate as f32,
            weight_decay: weight_decay as f32,
            steps: 0,
            m: params.zeros(),
            v: params.zeros(),
            masks: per_tensor,
        })
    }

    /// One update from the mini-batch gradient `grads`.
    pub fn step(&mut self, params: &mut Params, grads: &Grads) {
        self.steps += 1;
        let step_size = self.learning_rate / (1.0 - BETA1.powi(self.steps));
        let root_correction = (1.0 - BETA2.powi(self.steps)).sqrt();
        for (i, values) in params.values.iter_mut().enumerate() {
            // No decay on biases: they are offsets (the ZILN mu bias sits near the mean log spend), and
            // pulling them to zero biases predictions without limiting the model's capacity.
            let shrink = if Params::is_bias(i) { 1.0 } else { 1.0 - self.learning_rate * self.weight_decay };
            let mask = self.masks[i].as_deref();
            for (j, ((w, &g), (m, v))) in
                values.iter_mut().zip(&grads[i]).zip(self.m[i].iter_mut().zip(self.v[i].iter_mut())).enumerate()
            {
                if mask.is_some_and(|mask| !mask[j]) {
                    continue; // pruned: stays exactly 0, with no moments building up
                }
                *m = BETA1 * *m + (1.0 - BETA1) * g;
                *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                *w = *w * shrink - step_size * *m / (v.sqrt() / root_correction + EPSILON);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(weight: Vec<f32>, bias: Vec<f32>) -> Params {
        Params {
            names: vec!["l.weight".into(), "l.bias".into()],
            shapes: vec![vec![weight.len()], vec![bias.len()]],
            values: vec![weight, bias],
        }
    }

    /// Two steps by hand, following PyTorch's AdamW: decay the weight, then the bias-corrected Adam step.
    #[test]
    fn matches_the_update_rule() {
        let mut p = params(vec![1.0], vec![1.0]);
        let mut opt = AdamW::new(&mut p, 0.1, 0.5, &Masks::new()).unwrap();
        let (mut w, mut b, mut m, mut v) = (1.0f64, 1.0f64, 0.0, 0.0);
        for (t, g) in [(1, 0.5f64), (2, -0.25)] {
            opt.step(&mut p, &vec![vec![g as f32], vec![g as f32]]);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let adam = 0.1 * (m / (1.0 - 0.9f64.powi(t))) / ((v / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
            w = w * (1.0 - 0.1 * 0.5) - adam;
            b -= adam; // no decay on biases
        }
        for (got, want) in [(p.values[0][0], w), (p.values[1][0], b)] {
            assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn masked_weights_stay_zero_and_the_rest_trains() {
        let mut p = params(vec![0.5, -0.7, 0.0, 0.3], vec![0.1]);
        let masks = Masks::from([("l.weight".to_string(), vec![true, false, false, true])]);
        let mut opt = AdamW::new(&mut p, 0.01, 0.01, &masks).unwrap();
        assert_eq!(p.values[0][1], 0.0, "pruned at the start");
        for _ in 0..10 {
            opt.step(&mut p, &vec![vec![1.0; 4], vec![1.0]]);
        }
        assert_eq!((p.values[0][1], p.values[0][2]), (0.0, 0.0));
        assert!(p.values[0][0] < 0.5 && p.values[0][3] < 0.3 && p.values[1][0] < 0.1);
    }

    #[test]
    fn bad_masks_are_input_errors() {
        let mut p = params(vec![1.0; 3], vec![0.0]);
        for masks in [
            Masks::from([("other.weight".to_string(), vec![true; 3])]),
            Masks::from([("l.weight".to_string(), vec![true; 2])]),
        ] {
            assert!(matches!(AdamW::new(&mut p, 0.1, 0.0, &masks), Err(Error::Input(_))));
        }
    }

    #[test]
    fn masks_from_a_pruned_model() {
        let w = Weights::from([
            ("a.weight".to_string(), crate::model::tensor::Tensor::f32(vec![3], vec![0.0, 1.0, 0.0])),
            ("a.bias".to_string(), crate::model::tensor::Tensor::f32(vec![1], vec![0.0])),
            ("b.weight".to_string(), crate::model::tensor::Tensor::f32(vec![2], vec![1.0, 2.0])),
        ]);
        assert_eq!(masks_of_zero_weights(&w), Masks::from([("a.weight".to_string(), vec![false, true, false])]));
    }
}
