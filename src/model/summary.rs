//! A model described for people and programs: what `ltvx info --json` prints (and, later, what a
//! scoring server reports about the model it serves).

use serde_json::{Value, json};

use super::Model;

pub fn summary(model: &Model) -> Value {
    let g = model.graph();
    let layers: Vec<Value> = model
        .layers
        .iter()
        .map(|l| {
            let node = g.node(&l.name).expect("layers come from nodes");
            json!({
                "name": l.name,
                "op": node.op.kind(),
                "precision": model.layer_precision(&l.name),
                "weight_shape": l.weight_shape,
                "output_shape": model.shapes[&node.output],
                "macs": l.macs,
                "parameters": l.parameters(),
                "quantization": model.quantization().and_then(|q| q.layers.get(&l.name)),
                "sparsity": model.sparsity(&l.name),
                "pruning": model.layer_sparsity(&l.name),
                "head": l.head.map(|h| format!("{h:?}").to_lowercase()),
            })
        })
        .collect();
    let weights: usize = model.layers.iter().map(|l| l.weight_shape.iter().product::<usize>()).sum();
    let zeros: f64 =
        model.layers.iter().map(|l| model.sparsity(&l.name) * l.weight_shape.iter().product::<usize>() as f64).sum();
    let nodes: Vec<Value> = g
        .nodes
        .iter()
        .map(|n| json!({"name": n.name, "op": n.op.kind(), "inputs": n.inputs, "output": n.output, "shape": model.shapes[&n.output]}))
        .collect();
    json!({
        "file": model.origin(),
        "bytes": model.file_bytes().len(),
        "tensor_bytes": model.tensor_bytes(),
        "hash": model.hash(),
        "format_version": model.format_version(),
        "name": g.name,
        "precision": model.precision(),
        "inputs": g.inputs,
        "segments": g.segments(&model.shapes),
        "macs_per_customer": model.macs(),
        "skippable_macs_per_customer": model.layers.iter().filter_map(|l| model.layer_sparsity(&l.name)).map(|s| s.skippable_macs).sum::<u64>(),
        "parameters": model.parameters(),
        "sparsity": if weights == 0 { 0.0 } else { zeros / weights as f64 },
        "layers": layers,
        "nodes": nodes,
        "quantization": model.quantization().map(|q| json!({
            "calibration": q.calibration,
            "activations": q.activations,
            "layers": q.layers,
        })),
        "feature_spec": model.meta.feature_spec,
        "provenance": model.meta.provenance,
        "metrics": model.meta.metrics,
    })
}
