//! Shared test helpers: random graphs and models of every precision; running the binary.
#![allow(dead_code)]

pub mod cli;

use ltvx::Model;
use ltvx::model::graph::{Graph, Heads, InputSizes, Node, Op, Padding, SEQ, STATIC};
use ltvx::model::init::{random_model, synthetic_ranges};
use ltvx::model::quantize::{Int8Options, to_int8};
use ltvx::model::{ModelFile, Precision};
use ltvx::rng::Rng;

/// The model variants every backend is checked on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Variant {
    Fp32,
    Fp16,
    Int8,
    /// int8 trunk, f32 heads run in the host epilogue.
    Int8F32Heads,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Fp32, Variant::Fp16, Variant::Int8, Variant::Int8F32Heads];

    pub fn is_int8(self) -> bool {
        matches!(self, Variant::Int8 | Variant::Int8F32Heads)
    }
}

pub fn model(graph: Graph, variant: Variant, seed: u64, sparsity: f64) -> Model {
    let file = match variant {
        Variant::Fp32 => random_model(graph, Precision::Fp32, seed, sparsity),
        Variant::Fp16 => random_model(graph, Precision::Fp16, seed, sparsity),
        Variant::Int8 => random_model(graph, Precision::Int8, seed, sparsity),
        Variant::Int8F32Heads => int8_f32_heads(graph, seed, sparsity),
    };
    file.unwrap().into_model().unwrap()
}

fn int8_f32_heads(graph: Graph, seed: u64, sparsity: f64) -> ltvx::Result<ModelFile> {
    let float = random_model(graph, Precision::Fp32, seed, sparsity)?;
    let ranges = synthetic_ranges(&float, 256, seed)?;
    to_int8(&float, &ranges, &Int8Options { f32_heads: true, calibration: "test".into() })
}

/// A random valid graph: 1–3 convolutions (odd widths, kernels 1–5, both paddings, optional ReLU and
/// max-pool), a global average pool, a concat with the static features when there are any, 0–2
/// dense layers and the three heads.
pub fn random_graph(seed: u64) -> Graph {
    let mut r = Rng::derive(seed, "random-graph");
    let inputs = InputSizes { seq_channels: 1 + r.below(6), seq_len: 2 + r.below(40), static_features: r.below(10) };
    let mut nodes = Vec::new();
    let mut add = |name: String, op: Op, inputs: Vec<String>| -> String {
        nodes.push(Node { name: name.clone(), op, inputs, output: name.clone() });
        name
    };
    let (mut x, mut t) = (SEQ.to_string(), inputs.seq_len);
    for i in 0..1 + r.below(3) {
        let kernel = 1 + r.below(5);
        let padding = if t > kernel + 1 && r.uniform() < 0.4 { Padding::Valid } else { Padding::Same };
        t = padding.out_len(t, kernel);
        x = add(format!("conv{i}"), Op::Conv1d { out_channels: 1 + r.below(20), kernel, padding }, vec![x]);
        if r.uniform() < 0.8 {
            x = add(format!("conv{i}_relu"), Op::Relu, vec![x]);
        }
        if t >= 4 && r.uniform() < 0.4 {
            x = add(format!("conv{i}_pool"), Op::MaxPool1d, vec![x]);
            t /= 2;
        }
    }
    x = add("gap".into(), Op::GlobalAvgPool, vec![x]);
    if inputs.static_features > 0 {
        x = add("concat".into(), Op::Concat, vec![x, STATIC.into()]);
    }
    for i in 0..r.below(3) {
        x = add(format!("fc{i}"), Op::Dense { units: 1 + r.below(40) }, vec![x]);
        if r.uniform() < 0.8 {
            x = add(format!("fc{i}_relu"), Op::Relu, vec![x]);
        }
    }
    let ltv = add("ltv".into(), Op::Dense { units: 3 }, vec![x.clone()]);
    let c = add("churn_logit".into(), Op::Dense { units: 1 }, vec![x.clone()]);
    let churn = add("churn".into(), Op::Sigmoid, vec![c]);
    let s = add("segment_logits".into(), Op::Dense { units: 2 + r.below(6) }, vec![x]);
    let segment = add("segment".into(), Op::Softmax, vec![s]);
    let g = Graph { name: format!("random-{seed}"), inputs, nodes, heads: Heads { ltv, churn, segment } };
    g.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    g
}
