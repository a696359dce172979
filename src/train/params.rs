//! The trainable tensors of a graph as plain f32 vectors, in layer order: layer l's weight is tensor
//! 2l and its bias 2l + 1. Layouts are the model file's (PyTorch's): conv `[out, in, k]`, dense
//! `[out, in]` — which are exactly the row-major GEMM matrices `[out, in·k]` the ops multiply.

use crate::error::{Error, Result};
use crate::model::graph::{Graph, Shapes};
use crate::model::tensor::{Tensor, TensorData, Weights};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Params {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub values: Vec<Vec<f32>>,
}

/// One gradient (or optimizer state) vector per parameter tensor.
pub(crate) type Grads = Vec<Vec<f32>>;

impl Params {
    /// The graph's layer tensors from `weights`: every one present, f32, of the right shape, finite.
    pub fn from_weights(graph: &Graph, shapes: &Shapes, weights: &Weights) -> Result<Params> {
        let mut p = Params { names: Vec::new(), shapes: Vec::new(), values: Vec::new() };
        for layer in graph.layers(shapes) {
            for (suffix, shape) in [("weight", layer.weight_shape.clone()), ("bias", vec![layer.out_channels])] {
                let name = format!("{}.{suffix}", layer.name);
                p.values.push(tensor_values(&name, &shape, weights.get(&name))?);
                p.names.push(name);
                p.shapes.push(shape);
            }
        }
        Ok(p)
    }

    pub fn to_weights(&self) -> Weights {
        self.names
            .iter()
            .zip(&self.shapes)
            .zip(&self.values)
            .map(|((n, s), v)| (n.clone(), Tensor::f32(s.clone(), v.clone())))
            .collect()
    }

    /// self = decay · self + (1 − decay) · other: one step of a running average of the weights.
    pub fn blend(&mut self, other: &Params, decay: f32) {
        for (a, b) in self.values.iter_mut().zip(&other.values) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = decay * *x + (1.0 - decay) * y;
            }
        }
    }

    /// The same tensors, all zero.
    pub fn zeros_like(&self) -> Params {
        Params { values: self.zeros(), ..self.clone() }
    }

    /// self = factor · other.
    pub fn scaled_from(&mut self, other: &Params, factor: f32) {
        for (a, b) in self.values.iter_mut().zip(&other.values) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = factor * y;
            }
        }
    }

    pub fn zeros(&self) -> Grads {
        self.values.iter().map(|v| vec![0.0; v.len()]).collect()
    }

    pub fn is_bias(index: usize) -> bool {
        index % 2 == 1
    }
}

fn tensor_values(name: &str, shape: &[usize], tensor: Option<&Tensor>) -> Result<Vec<f32>> {
    let t = tensor.ok_or_else(|| Error::Input(format!("initial weights lack tensor {name}")))?;
    if t.shape != shape {
        return Err(Error::Input(format!("initial tensor {name} has shape {:?}; the graph needs {shape:?}", t.shape)));
    }
    let TensorData::F32(v) = &t.data else {
        return Err(Error::Input(format!("initial tensor {name} is not f32: training starts from float weights")));
    };
    if v.len() != shape.iter().product::<usize>() {
        return Err(Error::Input(format!("initial tensor {name} holds {} values for shape {shape:?}", v.len())));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Input(format!("initial tensor {name} value #{i} is {} (not finite)", v[i])));
    }
    Ok(v.clone())
}

/// `total += part`, element by element: the fixed-order reduction of shard gradients.
pub(crate) fn add_into(total: &mut Grads, part: &Grads) {
    for (t, p) in total.iter_mut().zip(part) {
        for (t, p) in t.iter_mut().zip(p) {
            *t += p;
        }
    }
}
