//! Float model → int8 model, exactly as docs/NUMERICS.md describes: per-output-channel symmetric s8
//! weights, u8 activations from calibrated ranges, i32 biases, and integer (M, shift) per channel.

use std::collections::{BTreeMap, HashMap};

use super::calibrate::Ranges;
use super::graph::{Graph, Node, Op, Shapes};
use super::quant::{
    ActQuant, LayerQuant, Quantization, Requant, SegmentMap, accumulator_fits, quantize_weight, quantized_tensors,
    symmetric_scale,
};
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
    let calibrated = calibrated_tensors(graph);
    for t in quantized_tensors(graph) {
        let source = calibrated.get(&t).unwrap_or(&t);
        let (lo, hi) =
            *ranges.get(source).ok_or_else(|| Error::Quant(format!("no calibration range for tensor {t:?}")))?;
        // An empty tensor (no static features) was never observed: any valid range represents it.
        let (lo, hi) = if lo > hi { (0.0, 0.0) } else { (lo, hi) };
        q.activations
            .insert(t.clone(), ActQuant::from_range(lo, hi).map_err(|e| Error::Quant(format!("tensor {t:?}: {e}")))?);
    }
    let segments = q.segment_map(graph, &shapes)?;
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
                let input_scales = input_scales(&segments, node, &shapes)?;
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
                // real = s_in · Σ_t (q − z) / T, T being this pool's input length.
                let s_in = segments.single(&node.inputs[0])?.scale;
                let acc_scale = s_in / shapes[&node.inputs[0]][1] as f32;
                let r = Requant::from_real(acc_scale as f64 / q.activations[&node.output].scale as f64)
                    .map_err(|e| Error::Quant(format!("layer {}: {e}", node.name)))?;
                let lq =
                    LayerQuant { acc_scale: vec![acc_scale], multiplier: vec![r.multiplier], shift: vec![r.shift] };
                q.layers.insert(node.name.clone(), lq);
            }
            _ => {}
        }
    }
    let meta = ModelMeta { quantization: Some(q), ..float.meta.clone() };
    Ok(ModelFile { meta, weights })
}

/// For each tensor that starts a fused group, the group's output: its range sets the tensor's
/// parameters, so that a Conv → ReLU → MaxPool chain is quantized on the values that actually leave
/// the kernel.
fn calibrated_tensors(graph: &Graph) -> HashMap<String, String> {
    graph.fused_groups().into_iter().map(|g| (graph.nodes[g.nodes[0]].output.clone(), g.output)).collect()
}

fn float_params(float: &ModelFile, layer: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let get = |name: String| {
        float.weights.get(&name).map(Tensor::to_f32).ok_or_else(|| Error::Quant(format!("missing tensor {name}")))
    };
    Ok((get(format!("{layer}.weight"))?, get(format!("{layer}.bias"))?))
}

/// The real scale of each element of one output channel's reduction (input × kernel taps).
fn input_scales(segments: &SegmentMap, node: &Node, shapes: &Shapes) -> Result<Vec<f32>> {
    match node.op {
        Op::Conv1d { kernel, .. } => {
            let s = segments.single(&node.inputs[0])?.scale;
            Ok(vec![s; shapes[&node.inputs[0]][0] * kernel])
        }
        _ => Ok(segments.per_element(&node.inputs[0])?.iter().map(|a| a.scale).collect()),
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
        let scale = symmetric_scale(&scaled);
        // An all-zero (pruned) channel still needs a positive scale for its bias.
        let acc_scale = if scale > 0.0 { scale } else { fallback };
        let row8: Vec<i8> = scaled.iter().map(|&v| quantize_weight(v, acc_scale)).collect();
        let bias = (b[o] / acc_scale).round();
        // NaN and out-of-range values fail too: the accumulator must hold any partial sum.
        if !(bias.abs() <= i32::MAX as f32 && accumulator_fits(bias as i32, &row8)) {
            let b = b[o];
            return Err(Error::Quant(format!("layer {name}: bias {b} of channel {o} does not fit the accumulator")));
        }
        w8.extend(row8);
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
