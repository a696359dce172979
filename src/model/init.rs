//! `ltvx init`: a model with random He-normal weights, deterministic per seed — for benchmarks,
//! hardware bring-up and tests before any data is at hand.

use serde_json::json;

use super::block_prune::{BlockShape, prune_blocks};
use super::calibrate::{Ranges, observe_ranges};
use super::graph::{Graph, InputSizes};
use super::quantize::{Int8Options, to_fp16, to_int8};
use super::tensor::{Tensor, Weights};
use super::{ModelFile, ModelMeta, Precision, Preset};
use crate::data::synthetic;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Synthetic customers used to calibrate an initialised int8 model: up to 512, fewer for big models
/// so that the reference's calibration pass stays around 2 G multiply-adds (about a second).
fn calibration_customers(macs: u64) -> usize {
    (2_000_000_000 / macs.max(1)).clamp(64, 512) as usize
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub preset: Preset,
    pub precision: Precision,
    pub seed: u64,
    /// Fraction of each layer's weights zeroed by magnitude, in [0, 1).
    pub sparsity: f64,
    /// Input sizes; the preset's defaults when `None`.
    pub inputs: Option<InputSizes>,
    /// Prune whole blocks aligned with the CPU kernels instead of single weights.
    pub block: Option<BlockShape>,
}

pub fn init(opts: &InitOptions) -> Result<ModelFile> {
    let graph = opts.preset.graph(opts.inputs.unwrap_or(opts.preset.default_inputs()));
    let mut file = match opts.block {
        None => random_model(graph, opts.precision, opts.seed, opts.sparsity)?,
        Some(block) => {
            let mut float = random_model(graph, Precision::Fp32, opts.seed, 0.0)?;
            prune_blocks(&mut float, block, opts.sparsity)?;
            convert(float, opts.precision, opts.seed)?
        }
    };
    file.meta.provenance = json!({
        "tool": concat!("ltvx ", env!("CARGO_PKG_VERSION")),
        "command": "init",
        "preset": opts.preset.to_string(),
        "seed": opts.seed,
        "precision": opts.precision.to_string(),
        "sparsity": opts.sparsity,
        "sparsity_block": opts.block.map(|b| format!("{}x{}", b.rows, b.cols)),
        "weights": "He-normal (std = sqrt(2 / fan_in)), biases normal(0, 0.05)",
    });
    Ok(file)
}

/// Any graph with random He-normal weights (deterministic per seed and layer name), `sparsity` of
/// each layer zeroed by magnitude, converted to `precision` (int8: calibrated on synthetic customers).
pub fn random_model(graph: Graph, precision: Precision, seed: u64, sparsity: f64) -> Result<ModelFile> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::Input(format!("sparsity {sparsity} is outside [0, 1)")));
    }
    let shapes = graph.check()?;
    let mut weights = Weights::new();
    for layer in graph.layers(&shapes) {
        let mut rng = Rng::derive(seed, &layer.name);
        let fan_in: usize = layer.weight_shape[1..].iter().product();
        let std = (2.0 / fan_in as f64).sqrt();
        let n: usize = layer.weight_shape.iter().product();
        let mut w: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
        prune_by_magnitude(&mut w, sparsity);
        let b: Vec<f32> = (0..layer.out_channels).map(|_| (rng.normal() * 0.05) as f32).collect();
        weights.insert(format!("{}.weight", layer.name), Tensor::f32(layer.weight_shape.clone(), w));
        weights.insert(format!("{}.bias", layer.name), Tensor::f32(vec![layer.out_channels], b));
    }
    let meta = ModelMeta {
        graph,
        quantization: None,
        feature_spec: json!({}),
        provenance: json!({}),
        metrics: json!({}),
        patterns: Default::default(),
    };
    convert(ModelFile { meta, weights }, precision, seed)
}

/// A float model in `precision` (int8: calibrated on synthetic customers drawn with `seed`).
pub fn convert(float: ModelFile, precision: Precision, seed: u64) -> Result<ModelFile> {
    let shapes = float.meta.graph.check()?;
    match precision {
        Precision::Fp32 => Ok(float),
        Precision::Fp16 => Ok(to_fp16(&float)),
        Precision::Int8 => {
            let n = calibration_customers(float.meta.graph.total_macs(&shapes));
            let calibration = format!("minmax over {n} synthetic customers (seed {seed})");
            to_int8(&float, &synthetic_ranges(&float, n, seed)?, &Int8Options { f32_heads: false, calibration })
        }
    }
}

/// Activation ranges of a float model over synthetic customers.
pub fn synthetic_ranges(float: &ModelFile, customers: usize, seed: u64) -> Result<Ranges> {
    let customers = synthetic::customers(float.meta.graph.inputs, customers, seed);
    observe_ranges(&float.clone().into_model()?, &customers)
}

/// Zeroes the `fraction` of weights with the smallest magnitude (ties broken by position).
pub fn prune_by_magnitude(w: &mut [f32], fraction: f64) {
    let k = (fraction * w.len() as f64).round() as usize;
    if k == 0 {
        return;
    }
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(a.cmp(&b)));
    for &i in &order[..k.min(w.len())] {
        w[i] = 0.0;
    }
}
