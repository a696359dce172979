//! How far an int8 model strays from its float parent, layer by layer, on a set of customers (the
//! calibration customers, for `ltvx compress --report`): every fusion-boundary u8 tensor dequantized
//! against the float value of the same tensor, and the heads' logits.

use std::collections::HashMap;

use serde::Serialize;

use crate::backend::reference::ReferencePlan;
use crate::backend::{BackendChoice, BackendKind};
use crate::engine::{Batch, Engine, HeadValues};
use crate::error::{Error, Result};
use crate::model::graph::HeadKind;
use crate::model::{Model, Precision};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerError {
    /// The layer whose fused group ends at `tensor` (a head's Dense for the heads).
    pub layer: String,
    pub tensor: String,
    /// The u8 tensor's scale and zero point; for int8 heads, the largest accumulator scale; 0 for
    /// float heads.
    pub scale: f32,
    pub zero_point: Option<u8>,
    /// The real values the tensor can represent (`None` for heads: i32 accumulators do not clip).
    pub range: Option<(f32, f32)>,
    /// Share of the float values outside that range.
    pub clipped: f64,
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
    /// Root-mean-square error over the float values' root-mean-square: the error in their units.
    pub relative_rmse: f64,
}

/// Compares `int8` with its float parent `float` on `batch` (both run by the reference backend).
pub fn quantization_report(float: &Model, int8: &Model, batch: &Batch) -> Result<Vec<LayerError>> {
    let q = int8.quantization().ok_or_else(|| Error::Quant("the compressed model is not int8".into()))?;
    if float.precision() == Precision::Int8 || float.graph() != int8.graph() {
        return Err(Error::Quant("the report compares an int8 model with its own float parent".into()));
    }
    let trace = Engine::build(int8, BackendChoice::Kind(BackendKind::Reference))?.trace(batch)?;
    let plan = ReferencePlan::new(float);
    let mut reference: HashMap<String, Vec<f32>> = HashMap::new();
    let mut heads: [Vec<f32>; 3] = Default::default();
    for i in 0..batch.len() {
        let logits = plan.forward_f32(batch.seq_row(i), batch.stat_row(i), &mut |name, values| {
            if trace.boundaries.contains_key(name) {
                reference.entry(name.to_string()).or_default().extend_from_slice(values);
            }
        });
        for (all, row) in heads.iter_mut().zip(logits) {
            all.extend(row);
        }
    }
    let g = int8.graph();
    // A fused group's output carries the parameters stored under its first node's output.
    let group_of: HashMap<String, &crate::model::graph::Node> =
        g.fused_groups().into_iter().map(|grp| (grp.output, &g.nodes[grp.nodes[0]])).collect();
    let mut report = Vec::new();
    for (tensor, values) in &trace.boundaries {
        let first = group_of.get(tensor).ok_or_else(|| Error::Quant(format!("{tensor:?} ends no fused group")))?;
        // A Concat's parts keep their own parameters: its producers' rows report them.
        let Some(&a) = q.activations.get(&first.output) else { continue };
        let range = (a.dequantize(0), a.dequantize(255));
        let got: Vec<f32> = values.iter().map(|&v| a.dequantize(v)).collect();
        let mut e = compare(&reference[tensor], &got);
        e.clipped = share(&reference[tensor], |x| x < range.0 - a.scale / 2.0 || x > range.1 + a.scale / 2.0);
        report.push(LayerError {
            layer: first.name.clone(),
            tensor: tensor.clone(),
            scale: a.scale,
            zero_point: Some(a.zero_point),
            range: Some(range),
            ..e
        });
    }
    // In graph order, as `ltvx info` lists the layers.
    report.sort_by_key(|e| g.nodes.iter().position(|n| n.name == e.layer));
    let outputs = [&trace.heads.ltv, &trace.heads.churn, &trace.heads.segment];
    for ((head, values), float_logits) in HeadKind::ALL.into_iter().zip(outputs).zip(&heads) {
        let dense = g.head_dense(head);
        let (got, scale) = match values {
            HeadValues::Logits(v) => (v.clone(), 0.0),
            HeadValues::Accumulators(acc) => {
                let s = &q.layers[&dense.name].acc_scale;
                (
                    acc.iter().enumerate().map(|(i, &v)| s[i % s.len()] * v as f32).collect(),
                    s.iter().fold(0f32, |m, &x| m.max(x)),
                )
            }
        };
        report.push(LayerError {
            layer: dense.name.clone(),
            tensor: dense.output.clone(),
            scale,
            ..compare(float_logits, &got)
        });
    }
    Ok(report)
}

fn share(v: &[f32], pred: impl Fn(f32) -> bool) -> f64 {
    v.iter().filter(|&&x| pred(x)).count() as f64 / v.len().max(1) as f64
}

/// Error statistics of `got` against `want` (no range: the caller fills in what it knows).
fn compare(want: &[f32], got: &[f32]) -> LayerError {
    let n = want.len().max(1) as f64;
    let (mut sum, mut max, mut sq, mut ref_sq) = (0f64, 0f64, 0f64, 0f64);
    for (&w, &g) in want.iter().zip(got) {
        let d = (g as f64 - w as f64).abs();
        sum += d;
        max = max.max(d);
        sq += d * d;
        ref_sq += (w as f64).powi(2);
    }
    LayerError {
        layer: String::new(),
        tensor: String::new(),
        scale: 0.0,
        zero_point: None,
        range: None,
        clipped: 0.0,
        mean_abs_error: sum / n,
        max_abs_error: max,
        relative_rmse: if ref_sq > 0.0 { (sq / ref_sq).sqrt() } else { 0.0 },
    }
}
