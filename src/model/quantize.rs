//! Float model → int8 model, exactly as docs/NUMERICS.md describes: per-output-channel symmetric s8
//! weights, u8 activations from calibrated ranges, i32 biases, and integer (M, shift) per channel.

use std::collections::BTreeMap;

use super::calibrate::Ranges;
use super::graph::{Graph, Op, SEQ, STATIC, Shapes};
use super::quant::{ActQuant, LayerQuant, Quantization, Requant, quantize_weight, quantized_tensors};
use super::tensor::{Tensor, TensorData, Weights};
use super::{ModelFile, ModelMeta};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct Int8Options {
    /// Keep the heads' weights in f32; they then run in the host epilogue on dequantized inputs.
    pub f32_heads: bool,
    /// How `ranges` were obtained, recorded in the file.
    pub calibration: String,
}

pub fn to_int8(float: &ModelFile, ranges: &Ranges, opts: &Int8Options) -> Result<ModelFile> {
    let graph = &float.meta.graph;
    let shapes = graph.check()?;
    let mut q = Quantization { calibration: opts.calibration.clone(), ..Default::default() };
    for t in quantized_tensors(graph) {
        let (lo, hi) = *ranges
            .get(calibrated_tensor(graph, &t))
            .ok_or_else(|| Error::Quant(format!("no calibration range for tensor {t:?}")))?;
        // An empty tensor (no static features) was never observed: any valid range represents it.
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        q.activations
            .insert(t.clone(), ActQuant::from_range(lo, hi).map_err(|e| Error::Quant(format!("tensor {t:?}: {e}")))?);
    }
    let mut weights = Weights::new();
    for node in &graph.nodes {
        match node.op {
            Op::Conv1d { .. } | Op::Dense { .. } => {
                let head = graph.head_of(node).is_some();
                let (w, b) = float_params(float, &node.name)?;
                if head && opts.f32_heads {
                    weights.insert(
                        format!("{}.weight", node.name),
                        float.weights[&format!("{}.weight", node.name)].clone(),
                    );
                    weights.insert(format!("{}.bias", node.name), Tensor::f32(vec![b.len()], b));
                    continue;
                }
                let input_scales = input_scales(graph, &shapes, &q, node)?;
                let out = if head { None } else { Some(q.activations[&node.output]) };
                let (w8, b32, lq) = quantize_layer(&node.name, &w, &b, &input_scales, out)?;
                let shape = float.weights[&format!("{}.weight", node.name)].shape.clone();
                weights.insert(format!("{}.weight", node.name), Tensor { shape, data: TensorData::I8(w8) });
                weights.insert(
                    format!("{}.bias", node.name),
                    Tensor { shape: vec![b32.len()], data: TensorData::I32(b32) },
                );
                q.layers.insert(node.name.clone(), lq);
            }
            Op::GlobalAvgPool => {
                let s_in = q.single(graph, &shapes, &node.inputs[0])?.scale;
                let t = shapes[&node.inputs[0]][1];
                let acc_scale = s_in / t as f32;
                let r = Requant::from_real(acc_scale as f64 / q.activations[&node.output].scale as f64)
                    .map_err(|e| Error::Quant(format!("layer {}: {e}", node.name)))?;
                q.layers.insert(
                    node.name.clone(),
                    LayerQuant { acc_scale: vec![acc_scale], multiplier: vec![r.multiplier], shift: vec![r.shift] },
                );
            }
            _ => {}
        }
    }
    let meta = ModelMeta { quantization: Some(q), ..float.meta.clone() };
    Ok(ModelFile { meta, weights })
}

/// The tensor whose range sets a quantized tensor's parameters: the end of its fused group, so that
/// a Conv → ReLU → MaxPool chain is quantized on the values that actually leave the kernel.
fn calibrated_tensor<'g>(graph: &'g Graph, tensor: &'g str) -> &'g str {
    if tensor == SEQ || tensor == STATIC {
        return tensor;
    }
    graph
        .fused_groups()
        .into_iter()
        .find(|g| graph.nodes[g.nodes[0]].output == tensor)
        .map(|g| graph.nodes[*g.nodes.last().expect("non-empty")].output.as_str())
        .unwrap_or(tensor)
}

fn float_params(float: &ModelFile, layer: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |name: String| {
        float.weights.get(&name).map(Tensor::to_f32).ok_or_else(|| Error::Quant(format!("missing tensor {name}")))
    };
    Ok((get(format!("{layer}.weight"))?, get(format!("{layer}.bias"))?))
}

/// The real scale of each element of one output channel's reduction (input × kernel taps).
fn input_scales(graph: &Graph, shapes: &Shapes, q: &Quantization, node: &super::graph::Node) -> Result<Vec<f32>> {
    match node.op {
        Op::Conv1d { kernel, .. } => {
            let s = q.single(graph, shapes, &node.inputs[0])?.scale;
            Ok(vec![s; shapes[&node.inputs[0]][0] * kernel])
        }
        _ => Ok(q
            .segments(graph, shapes, &node.inputs[0])?
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.quant.scale, s.len))
            .collect()),
    }
}

/// One layer: acc_scale[o] = max_j |W[o,j]·s_j| / 127, w8 = round(W·s/acc_scale), b32 = round(b/acc_scale),
/// and (M, sh) for acc_scale / s_out unless it is a head.
fn quantize_layer(
    name: &str,
    w: &[f32],
    b: &[f32],
    scales: &[f32],
    out: Option<ActQuant>,
) -> Result<(Vec<i8>, Vec<i32>, LayerQuant)> {
    let fan_in = scales.len();
    let mut lq = LayerQuant::default();
    let mut w8 = Vec::with_capacity(w.len());
    let mut b32 = Vec::with_capacity(b.len());
    let fallback = scales.iter().fold(0f32, |m, &s| m.max(s)) / 127.0;
    for (o, row) in w.chunks(fan_in).enumerate() {
        let scaled: Vec<f32> = row.iter().zip(scales).map(|(w, s)| w * s).collect();
        let max = scaled.iter().fold(0f32, |m, v| m.max(v.abs()));
        // An all-zero (pruned) channel still needs a positive scale for its bias.
        let acc_scale = if max > 0.0 { max / 127.0 } else { fallback };
        w8.extend(scaled.iter().map(|&v| quantize_weight(v, acc_scale)));
        let bias = (b[o] / acc_scale).round();
        // Also catches NaN: a bias that is not a number does not fit either.
        if bias.is_nan() || bias.abs() >= (1u32 << 30) as f32 {
            return Err(Error::Quant(format!(
                "layer {name}: bias {} of channel {o} does not fit the accumulator",
                b[o]
            )));
        }
        b32.push(bias as i32);
        lq.acc_scale.push(acc_scale);
        if let Some(out) = out {
            let r = Requant::from_real(acc_scale as f64 / out.scale as f64)
                .map_err(|e| Error::Quant(format!("layer {name}: {e}")))?;
            lq.multiplier.push(r.multiplier);
            lq.shift.push(r.shift);
        }
    }
    Ok((w8, b32, lq))
}

/// Converts float weights to f16 (round to nearest even); biases stay f32.
pub fn to_fp16(float: &ModelFile) -> ModelFile {
    let weights = float
        .weights
        .iter()
        .map(|(name, t)| {
            let t = match (&t.data, name.ends_with(".weight")) {
                (TensorData::F32(v), true) => Tensor {
                    shape: t.shape.clone(),
                    data: TensorData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
                },
                _ => t.clone(),
            };
            (name.clone(), t)
        })
        .collect::<BTreeMap<_, _>>();
    ModelFile { meta: float.meta.clone(), weights }
}
