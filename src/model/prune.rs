//! Magnitude pruning of a float model's trunk layers, in the patterns the kernels can exploit:
//! unstructured, R×C blocks along the reduction axis, 2:4 (two non-zeros in every four consecutive
//! reduction weights) and whole output channels (which shrink the graph instead of zeroing weights).
//!
//! Every layer is viewed as the GEMM matrix `[out, in·kernel]` the ops multiply (the file's layout):
//! a row is an output channel, the reduction axis runs along a row. Heads are never pruned: they are
//! a few hundred weights that every score depends on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ModelFile;
use super::graph::{Graph, LayerInfo, Op};
use super::tensor::{Tensor, TensorData};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Unstructured,
    /// `rows` output channels × `cols` consecutive reduction weights, zeroed together.
    Block {
        rows: usize,
        cols: usize,
    },
    /// At most two non-zeros in every group of four consecutive reduction weights (GPU sparse tensor
    /// cores); always 50 %.
    TwoFour,
    /// Whole output channels removed, with the matching inputs of the layers that read them.
    Channel,
}

impl Pattern {
    /// The block of weights zeroed together: the unit of the file's sparse storage.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            Pattern::Unstructured | Pattern::TwoFour => Some((1, 1)),
            Pattern::Block { rows, cols } => Some((rows, cols)),
            Pattern::Channel => None,
        }
    }

    /// Whether a `[out, reduction]` weight matrix holds the pattern exactly: the nearest pattern
    /// that fits, `None` when none does (the layer stays dense).
    fn fit(self, out: usize, reduction: usize) -> Option<Pattern> {
        match self {
            Pattern::Unstructured => Some(self),
            Pattern::TwoFour => reduction.is_multiple_of(4).then_some(self),
            Pattern::Block { rows, cols } => {
                let largest_divisor =
                    |n: usize, at_most: usize| (1..=at_most.min(n)).rev().find(|&d| n.is_multiple_of(d));
                let (r, c) = (largest_divisor(out, rows)?, largest_divisor(reduction, cols)?);
                // A 1×1 "block" is unstructured pruning: no kernel could skip anything for it.
                (r * c > 1 || rows * cols == 1).then_some(Pattern::Block { rows: r, cols: c })
            }
            Pattern::Channel => None,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Unstructured => f.write_str("unstructured"),
            Pattern::Block { rows, cols } => write!(f, "block:{rows}x{cols}"),
            Pattern::TwoFour => f.write_str("2:4"),
            Pattern::Channel => f.write_str("channel"),
        }
    }
}

/// Blocks larger than this are not patterns any kernel uses; the bound keeps hostile files small.
const MAX_BLOCK_SIDE: usize = 256;

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let unknown = || format!("unknown pruning pattern {s:?} (expected unstructured, block:RxC, channel or 2:4)");
        match s {
            "unstructured" => Ok(Pattern::Unstructured),
            "2:4" => Ok(Pattern::TwoFour),
            "channel" => Ok(Pattern::Channel),
            _ => {
                let (r, c) = s.strip_prefix("block:").and_then(|b| b.split_once(['x', '×'])).ok_or_else(unknown)?;
                let side = |v: &str| v.parse::<usize>().ok().filter(|n| (1..=MAX_BLOCK_SIDE).contains(n));
                match (side(r), side(c)) {
                    (Some(rows), Some(cols)) => Ok(Pattern::Block { rows, cols }),
                    _ => Err(format!("pruning pattern {s:?}: block sides must be 1 to {MAX_BLOCK_SIDE}")),
                }
            }
        }
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What pruning did to one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOutcome {
    pub layer: String,
    /// The pattern applied (the requested one or the nearest that fits); `None` = left dense.
    pub pattern: Option<Pattern>,
    /// Why the layer was left dense or took another pattern than requested.
    pub note: Option<String>,
    /// Weights before pruning, and those zeroed or (channel pruning) removed.
    pub weights: usize,
    pub pruned: usize,
    /// Heads are never pruned (channel pruning may still narrow their inputs).
    pub head: bool,
}

/// Pruning's outcome over the whole model.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    pub layers: Vec<LayerOutcome>,
}

impl PruneReport {
    /// Pruned share of the prunable (trunk) layers' weights.
    pub fn prunable_sparsity(&self) -> f64 {
        let (w, p) =
            self.layers.iter().filter(|l| l.prunable()).fold((0, 0), |(w, p), l| (w + l.weights, p + l.pruned));
        if w == 0 { 0.0 } else { p as f64 / w as f64 }
    }

    /// Pruned share of all the model's weights, heads included.
    pub fn model_sparsity(&self) -> f64 {
        let (w, p) = self.layers.iter().fold((0, 0), |(w, p), l| (w + l.weights, p + l.pruned));
        if w == 0 { 0.0 } else { p as f64 / w as f64 }
    }

    /// The per-layer patterns to record in the file (not for channel pruning, which leaves no zeros).
    pub fn patterns(&self) -> BTreeMap<String, Pattern> {
        self.layers
            .iter()
            .filter_map(|l| l.pattern.filter(|p| *p != Pattern::Channel).map(|p| (l.layer.clone(), p)))
            .collect()
    }
}

impl LayerOutcome {
    fn prunable(&self) -> bool {
        !self.head
    }
}

/// Prunes `sparsity` of every trunk layer's weights of the float model `file` by magnitude, in
/// `pattern` (zeros already there count: pruning again to a higher sparsity keeps earlier zeros,
/// which have the lowest magnitude). Errors: sparsity outside [0, 1), a non-float model, a pattern
/// that fits no layer, 2:4 at another sparsity than 0.5.
pub fn prune(file: &mut ModelFile, pattern: Pattern, sparsity: f64) -> Result<PruneReport> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::Input(format!("sparsity {sparsity} is outside [0, 1)")));
    }
    if pattern == Pattern::TwoFour && sparsity != 0.5 {
        return Err(Error::Input(format!("2:4 keeps two of every four weights: its sparsity is 0.5, not {sparsity}")));
    }
    if file.weights.values().any(|t| !matches!(t.data, TensorData::F32(_))) {
        return Err(Error::Input("pruning needs an fp32 model (prune first, then compress to int8 or fp16)".into()));
    }
    let report = if pattern == Pattern::Channel {
        // Earlier patterns described the layers' old shapes; removing channels leaves no zero blocks.
        file.meta.patterns.clear();
        prune_channels(file, sparsity)?
    } else {
        prune_in_place(file, pattern, sparsity)
    };
    if report.layers.iter().all(|l| l.pattern.is_none()) {
        return Err(Error::Input(format!("pruning pattern {pattern} fits no layer of the model")));
    }
    file.meta.patterns.extend(report.patterns());
    Ok(report)
}

fn layers(graph: &Graph) -> Result<Vec<LayerInfo>> {
    Ok(graph.layers(&graph.check()?))
}

fn weight_mut<'a>(file: &'a mut ModelFile, layer: &str) -> &'a mut Vec<f32> {
    match file.weights.get_mut(&format!("{layer}.weight")).map(|t| &mut t.data) {
        Some(TensorData::F32(v)) => v,
        _ => unreachable!("checked: every tensor of the model is f32"),
    }
}

fn prune_in_place(file: &mut ModelFile, pattern: Pattern, sparsity: f64) -> PruneReport {
    let mut report = PruneReport { layers: Vec::new() };
    for l in layers(&file.meta.graph).expect("a model's graph is checked") {
        let weights: usize = l.weight_shape.iter().product();
        let reduction = weights / l.out_channels;
        let head = l.head.is_some();
        let mut outcome = LayerOutcome { layer: l.name.clone(), pattern: None, note: None, weights, pruned: 0, head };
        if head {
            outcome.note = Some("head: never pruned".into());
        } else if let Some(fitted) = pattern.fit(l.out_channels, reduction) {
            if fitted != pattern {
                outcome.note =
                    Some(format!("{pattern} does not fit [{}, {reduction}]: nearest {fitted}", l.out_channels));
            }
            let w = weight_mut(file, &l.name);
            if fitted == Pattern::TwoFour {
                zero_two_of_four(w);
            } else {
                let (rows, cols) = fitted.block().expect("in-place patterns have blocks");
                zero_blocks(w, l.out_channels, rows, cols, sparsity);
            }
            outcome.pruned = w.iter().filter(|&&x| x == 0.0).count();
            outcome.pattern = Some(fitted);
        } else {
            outcome.note = Some(format!("{pattern} does not fit [{}, {reduction}]: left dense", l.out_channels));
        }
        report.layers.push(outcome);
    }
    report
}

/// Zeroes the `sparsity` share of `rows`×`cols` blocks (rounded to whole blocks) with the smallest
/// L2 norm, ties broken by position, in the `[out, w.len()/out]` matrix `w`.
pub fn zero_blocks(w: &mut [f32], out: usize, rows: usize, cols: usize, sparsity: f64) {
    let reduction = w.len() / out;
    let (block_rows, block_cols) = (out / rows, reduction / cols);
    let blocks = block_rows * block_cols;
    let norm = |b: usize| -> f64 {
        let (br, bc) = (b / block_cols, b % block_cols);
        (0..rows)
            .flat_map(|r| &w[(br * rows + r) * reduction + bc * cols..][..cols])
            .map(|&x| x as f64 * x as f64)
            .sum()
    };
    let norms: Vec<f64> = (0..blocks).map(norm).collect();
    let mut order: Vec<usize> = (0..blocks).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
    let k = ((sparsity * blocks as f64).round() as usize).min(blocks);
    for &b in &order[..k] {
        let (br, bc) = (b / block_cols, b % block_cols);
        for r in 0..rows {
            w[(br * rows + r) * reduction + bc * cols..][..cols].fill(0.0);
        }
    }
}

/// Keeps the two largest magnitudes of every group of four consecutive weights (ties: the first).
pub fn zero_two_of_four(w: &mut [f32]) {
    for group in w.chunks_exact_mut(4) {
        let mut order = [0, 1, 2, 3];
        order.sort_by(|&a, &b| group[a].abs().total_cmp(&group[b].abs()).then(a.cmp(&b)));
        group[order[0]] = 0.0;
        group[order[1]] = 0.0;
    }
}

/// Where a layer's output channels are read: by weighted layers directly (after element-wise ReLU,
/// MaxPool or a global average pool, which keep channels apart), possibly at an offset inside a
/// Concat. `None` when something else reads them, and the channels cannot be removed.
fn channel_readers(graph: &Graph, layer: &str) -> std::result::Result<Vec<(String, usize)>, String> {
    let uses = graph.consumer_counts();
    let node = graph.node(layer).expect("layer names come from the graph");
    let mut tensor = node.output.clone();
    loop {
        let next = graph.nodes.iter().find(|n| n.inputs[0] == tensor);
        match next {
            Some(n)
                if uses.get(tensor.as_str()) == Some(&1)
                    && matches!(n.op, Op::Relu | Op::MaxPool1d | Op::GlobalAvgPool) =>
            {
                tensor = n.output.clone();
            }
            _ => break,
        }
    }
    let mut readers = Vec::new();
    for n in graph.nodes.iter().filter(|n| n.inputs.contains(&tensor)) {
        match n.op {
            Op::Conv1d { .. } | Op::Dense { .. } => readers.push((n.name.clone(), 0)),
            Op::Concat => {
                let shapes = graph.check().map_err(|e| e.to_string())?;
                let offset: usize = n.inputs.iter().take_while(|i| **i != tensor).map(|i| shapes[i][0]).sum();
                let dense: Vec<_> = graph.nodes.iter().filter(|d| d.inputs.contains(&n.output)).collect();
                match dense[..] {
                    [d] if matches!(d.op, Op::Dense { .. }) => readers.push((d.name.clone(), offset)),
                    _ => {
                        return Err(format!(
                            "its channels reach {} through a concat read by other than one dense layer",
                            n.name
                        ));
                    }
                }
            }
            ref op => return Err(format!("its output channels feed a {} node ({})", op.kind(), n.name)),
        }
    }
    Ok(readers)
}

/// Removes the `sparsity` share of each trunk layer's output channels with the smallest L2 norm,
/// and the matching input columns of the layers that read them: the graph shrinks.
fn prune_channels(file: &mut ModelFile, sparsity: f64) -> Result<PruneReport> {
    let mut report = PruneReport { layers: Vec::new() };
    let before = layers(&file.meta.graph)?;
    for l in &before {
        let weights: usize = l.weight_shape.iter().product();
        let head = l.head.is_some();
        let mut outcome = LayerOutcome { layer: l.name.clone(), pattern: None, note: None, weights, pruned: 0, head };
        if head {
            outcome.note = Some("head: keeps its outputs; its inputs narrow with the layer before".into());
            report.layers.push(outcome);
            continue;
        }
        let readers = match channel_readers(&file.meta.graph, &l.name) {
            Ok(r) => r,
            Err(why) => {
                outcome.note = Some(format!("left dense: {why}"));
                report.layers.push(outcome);
                continue;
            }
        };
        let out = l.out_channels;
        let remove = ((sparsity * out as f64).round() as usize).min(out - 1);
        let w = weight_mut(file, &l.name);
        // Earlier layers' pruning may have narrowed this one's inputs already.
        let reduction = w.len() / out;
        let norms: Vec<f64> = w.chunks(reduction).map(|r| r.iter().map(|&x| x as f64 * x as f64).sum()).collect();
        let mut order: Vec<usize> = (0..out).collect();
        order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
        let mut keep = vec![true; out];
        order[..remove].iter().for_each(|&c| keep[c] = false);
        shrink_rows(file, &l.name, &keep);
        for (reader, offset) in readers {
            shrink_inputs(file, &reader, offset, &keep);
        }
        let node = file.meta.graph.nodes.iter_mut().find(|n| n.name == l.name).expect("layer of the graph");
        match &mut node.op {
            Op::Conv1d { out_channels, .. } => *out_channels = out - remove,
            Op::Dense { units } => *units = out - remove,
            _ => unreachable!("layers are conv1d or dense"),
        }
        file.meta.graph.check()?;
        outcome.pattern = Some(Pattern::Channel);
        report.layers.push(outcome);
    }
    // Removed weights: each layer's own rows and the inputs its readers lost, counted once per layer.
    let after: BTreeMap<String, usize> =
        layers(&file.meta.graph)?.into_iter().map(|l| (l.name, l.weight_shape.iter().product())).collect();
    for o in &mut report.layers {
        o.pruned = o.weights - after[&o.layer];
    }
    Ok(report)
}

/// Keeps the output channels `keep` of a layer's weight and bias.
fn shrink_rows(file: &mut ModelFile, layer: &str, keep: &[bool]) {
    for suffix in ["weight", "bias"] {
        let t = file.weights.get_mut(&format!("{layer}.{suffix}")).expect("layer tensors");
        let TensorData::F32(v) = &t.data else { unreachable!("checked f32") };
        let row = v.len() / keep.len();
        let kept: Vec<f32> =
            v.chunks(row).zip(keep).filter(|(_, k)| **k).flat_map(|(r, _)| r.iter().copied()).collect();
        t.shape[0] = keep.iter().filter(|k| **k).count();
        *t = Tensor::f32(t.shape.clone(), kept);
    }
}

/// Keeps the input channels `keep` (at `offset` within the reader's input) of a reader's weight:
/// the columns of a Dense, the channel slices of a Conv1d.
fn shrink_inputs(file: &mut ModelFile, reader: &str, offset: usize, keep: &[bool]) {
    let t = file.weights.get_mut(&format!("{reader}.weight")).expect("layer tensors");
    let TensorData::F32(v) = &t.data else { unreachable!("checked f32") };
    let (out, inputs) = (t.shape[0], t.shape[1]);
    let taps: usize = t.shape[2..].iter().product();
    let kept_input = |i: usize| i < offset || i >= offset + keep.len() || keep[i - offset];
    let mut kept = Vec::with_capacity(v.len());
    for o in 0..out {
        for i in (0..inputs).filter(|&i| kept_input(i)) {
            kept.extend_from_slice(&v[(o * inputs + i) * taps..][..taps]);
        }
    }
    t.shape[1] = (0..inputs).filter(|&i| kept_input(i)).count();
    *t = Tensor::f32(t.shape.clone(), kept);
}

/// The sparsity to prune to after step `step` of `steps` towards `target`: Zhu & Gupta's cubic
/// schedule, which prunes most while the network is still far from its final sparsity.
pub fn schedule(target: f64, step: usize, steps: usize) -> f64 {
    let remaining = 1.0 - step as f64 / steps as f64;
    target * (1.0 - remaining.powi(3))
}
