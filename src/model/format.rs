//! The `.ltvx` model file: a safetensors container whose `__metadata__` holds JSON documents (format
//! version, graph, quantization, FeatureSpec, provenance, metrics). See docs/FORMAT.md.
//!
//! Opening validates everything before a byte of tensor data is trusted: the safetensors header
//! (length, offsets, sizes — by the `safetensors` crate), the format version, the graph, that the
//! tensors are exactly the graph's with the right dtypes and shapes, the quantization parameters and
//! the weight values. Any failure is a `Error::Format` naming the problem.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use half::f16;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::graph::{Graph, LayerInfo, Op, Shapes, check_node_fields};
use super::prune::Pattern;
use super::quant::{Quantization, accumulator_fits, quantized_tensors};
use super::sparse::{self, BLOCK_COLS, BLOCK_ROWS, BLOCKS, Grid};
use super::tensor::{Tensor, TensorData, Weights};
use crate::error::{Error, Result};

pub const FORMAT_NAME: &str = "ltvx";
/// The newest format this build writes and reads. See docs/FORMAT.md for the compatibility policy.
pub const FORMAT_VERSION: u32 = 2;
/// The first version with block-sparse weight tensors; files without them are written as version 1,
/// which older readers open.
const SPARSE_VERSION: u32 = 2;

/// Metadata keys (each value is a JSON document in a string).
const KEY_FORMAT: &str = "format";
const KEY_GRAPH: &str = "graph";
const KEY_QUANT: &str = "quantization";
const KEY_FEATURES: &str = "feature_spec";
const KEY_PROVENANCE: &str = "provenance";
const KEY_METRICS: &str = "metrics";
const KEY_SPARSITY: &str = "sparsity";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        })
    }
}

#[derive(Serialize, Deserialize)]
struct FormatTag {
    name: String,
    version: u32,
}

/// Everything in the file besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub graph: Graph,
    /// Present exactly when the model has int8 layers.
    pub quantization: Option<Quantization>,
    /// How features are built from transactions; `{}` for models that were not trained on data.
    pub feature_spec: Value,
    pub provenance: Value,
    pub metrics: Value,
    /// The pruning pattern of each pruned layer. Such a layer's weights are written block-sparse
    /// (only blocks with a non-zero) where that is smaller than dense.
    pub patterns: BTreeMap<String, Pattern>,
}

/// A pruned layer as the file records it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSparsity {
    pub pattern: Pattern,
    /// Share of the pattern's blocks that are all zero (for 2:4 and unstructured: of the weights).
    pub sparsity: f64,
}

/// A model being assembled in memory, before it is written.
#[derive(Debug, Clone)]
pub struct ModelFile {
    pub meta: ModelMeta,
    pub weights: Weights,
}

impl ModelFile {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        map.insert(KEY_GRAPH.to_string(), json(&self.meta.graph));
        if let Some(q) = &self.meta.quantization {
            map.insert(KEY_QUANT.to_string(), json(q));
        }
        map.insert(KEY_FEATURES.to_string(), json(&self.meta.feature_spec));
        map.insert(KEY_PROVENANCE.to_string(), json(&self.meta.provenance));
        map.insert(KEY_METRICS.to_string(), json(&self.meta.metrics));
        let mut tensors: BTreeMap<String, &Tensor> = self.weights.iter().map(|(k, v)| (k.clone(), v)).collect();
        let mut records = BTreeMap::new();
        let mut encoded = Vec::new();
        for (layer, &pattern) in &self.meta.patterns {
            let name = format!("{layer}.weight");
            let weight = self.weights.get(&name).ok_or_else(|| Error::Format {
                origin: "<new model>".into(),
                reason: format!("pattern for {layer:?}, which has no weight tensor"),
            })?;
            records.insert(layer.clone(), LayerSparsity { pattern, sparsity: block_sparsity(weight, pattern) });
            if let Some(parts) = pattern.block().and_then(|(r, c)| sparse::encode(weight, r, c)) {
                tensors.remove(&name);
                encoded.push((name, parts));
            }
        }
        for (name, [blocks, rows, cols]) in &encoded {
            tensors.insert(format!("{name}{BLOCKS}"), blocks);
            tensors.insert(format!("{name}{BLOCK_ROWS}"), rows);
            tensors.insert(format!("{name}{BLOCK_COLS}"), cols);
        }
        if !records.is_empty() {
            map.insert(KEY_SPARSITY.to_string(), json(&records));
        }
        let version = if encoded.is_empty() { 1 } else { SPARSE_VERSION };
        map.insert(KEY_FORMAT.to_string(), json(&FormatTag { name: FORMAT_NAME.into(), version }));
        let bytes = safetensors::serialize(tensors, Some(map))
            .map_err(|e| Error::Format { origin: "<new model>".into(), reason: e.to_string() })?;
        Ok(with_sorted_header(bytes))
    }

    /// Validates by reopening the serialized bytes: whatever is written can be read back.
    pub fn into_model(self) -> Result<Model> {
        Model::from_bytes("<new model>", self.to_bytes()?)
    }

    /// Writes atomically (temp file + rename), after checking that the bytes open as a model; returns
    /// the model as written.
    pub fn save(&self, path: &Path) -> Result<Model> {
        let model = Model::from_bytes(&path.display().to_string(), self.to_bytes()?)?;
        crate::atomic_file::write(path, |w| w.write_all(model.file_bytes()))?;
        Ok(model)
    }
}

/// Rewrites the safetensors header with its keys sorted: the writer lists the metadata map in hash
/// order, and the same model must give the same bytes (and hash) every time it is written.
fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    // serde_json's map is ordered (no preserve_order feature), so a round trip sorts every object.
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("the writer's own header is JSON");
    let mut text = header.to_string().into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Share of `pattern`'s blocks of `weight` that are all zero (for 2:4 and unstructured, whose
/// blocks are single weights: of the weights).
fn block_sparsity(weight: &Tensor, pattern: Pattern) -> f64 {
    let values = weight.to_f32();
    let out = weight.shape[0];
    let (rows, cols) = pattern.block().unwrap_or((1, 1));
    let reduction = values.len() / out.max(1);
    if values.is_empty() || !out.is_multiple_of(rows) || !reduction.is_multiple_of(cols) {
        return 0.0;
    }
    let blocks = values.len() / (rows * cols);
    let zero = (0..out / rows)
        .flat_map(|br| (0..reduction / cols).map(move |bc| (br, bc)))
        .filter(|&(br, bc)| {
            (0..rows).all(|r| values[(br * rows + r) * reduction + bc * cols..][..cols].iter().all(|&x| x == 0.0))
        })
        .count();
    zero as f64 / blocks as f64
}

/// Serializing our own metadata types (string keys, no maps with non-string keys) cannot fail.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("metadata types serialize to JSON")
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    source: Source,
}

impl TensorEntry {
    /// Bytes of data.
    fn len(&self) -> usize {
        match &self.source {
            Source::File(range) => range.len(),
            Source::Expanded { len, .. } => *len,
        }
    }
}

/// Where a tensor's bytes are: in the file, or (a sparse-stored weight) expanded at open time.
#[derive(Debug, Clone)]
enum Source {
    File(Range<usize>),
    /// u64 words so that any element type can be borrowed aligned; the tensor is the first `len` bytes.
    Expanded {
        words: Vec<u64>,
        len: usize,
    },
}

/// An opened, fully validated model. Tensor data stays in the memory-mapped file and is borrowed
/// where its alignment allows.
pub struct Model {
    origin: String,
    storage: Storage,
    tensors: HashMap<String, TensorEntry>,
    pub meta: ModelMeta,
    pub shapes: Shapes,
    pub layers: Vec<LayerInfo>,
    /// Bytes of tensor data in the file (sparse layers as stored, not expanded).
    stored_tensor_bytes: usize,
    /// Per pruned layer, as recorded and checked against the weights.
    sparsity: BTreeMap<String, LayerSparsity>,
    format_version: u32,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("origin", &self.origin).field("graph", &self.meta.graph.name).finish()
    }
}

impl Model {
    /// Memory-maps and validates a model file.
    pub fn open(path: &Path) -> Result<Model> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; ltvx never writes model files in place (it renames new
        // ones over them), so the mapped bytes do not change under us.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Model::validate(path.display().to_string(), Storage::Mapped(map))
    }

    pub fn from_bytes(origin: &str, bytes: Vec<u8>) -> Result<Model> {
        Model::validate(origin.to_string(), Storage::Owned(bytes))
    }

    fn validate(origin: String, storage: Storage) -> Result<Model> {
        let fail = |reason: String| Error::Format { origin: origin.clone(), reason };
        let bytes = storage.bytes();
        let (header_len, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| fail(format!("safetensors header: {e}")))?;
        let data_start = 8 + header_len;
        let (meta, version, sparsity) = parse_meta(header.metadata().as_ref()).map_err(&fail)?;
        let shapes = meta.graph.check().map_err(|e| fail(e.to_string()))?;
        let layers = meta.graph.layers(&shapes);
        let mut tensors = HashMap::new();
        for (name, info) in header.tensors() {
            let (s, e) = info.data_offsets;
            let source = Source::File(data_start + s..data_start + e);
            tensors.insert(name, TensorEntry { dtype: info.dtype, shape: info.shape.clone(), source });
        }
        drop(header);
        let stored_tensor_bytes = tensors.values().map(|t| t.len()).sum();
        let mut model = Model {
            origin: origin.clone(),
            storage,
            tensors,
            meta,
            shapes,
            layers,
            stored_tensor_bytes,
            sparsity,
            format_version: version,
        };
        model.expand_sparse().map_err(&fail)?;
        model.check_tensors().map_err(&fail)?;
        model.check_quantization().map_err(&fail)?;
        model.check_sparsity().map_err(fail)?;
        Ok(model)
    }

    /// Replaces each sparse-stored weight's three tensors by the dense weight, after checking them.
    fn expand_sparse(&mut self) -> Result<(), String> {
        let version = self.format_version;
        for l in &self.layers {
            let name = format!("{}.weight", l.name);
            let parts = [BLOCKS, BLOCK_ROWS, BLOCK_COLS].map(|s| format!("{name}{s}"));
            let present = parts.iter().filter(|p| self.tensors.contains_key(*p)).count();
            if present == 0 {
                continue;
            }
            if self.tensors.contains_key(&name) {
                return Err(format!("{name} is stored both dense and as blocks"));
            }
            if present != 3 {
                return Err(format!("{name} is stored sparse but lacks one of {parts:?}"));
            }
            if version < SPARSE_VERSION {
                return Err(format!("{name} is stored sparse, which format version {version} does not have"));
            }
            let record = self.sparsity.get(&l.name).ok_or_else(|| {
                format!("{name} is stored sparse but \"sparsity\" records no pattern for layer {}", l.name)
            })?;
            let (rows, cols) = record
                .pattern
                .block()
                .ok_or_else(|| format!("layer {}: pattern {} has no blocks to store", l.name, record.pattern))?;
            let (out, values) = (l.out_channels, l.weight_shape.iter().product::<usize>());
            let reduction = values / out;
            if !out.is_multiple_of(rows) || !reduction.is_multiple_of(cols) {
                return Err(format!(
                    "layer {}: {} does not tile its [{out}, {reduction}] weights",
                    l.name, record.pattern
                ));
            }
            let [blocks, starts, block_cols] = parts.clone().map(|p| self.tensors[&p].clone());
            let element = match blocks.dtype {
                Dtype::F32 => 4,
                Dtype::F16 => 2,
                Dtype::I8 => 1,
                d => return Err(format!("{} has dtype {d:?}; expected F32, F16 or I8", parts[0])),
            };
            if starts.dtype != Dtype::I32 || starts.shape.len() != 1 {
                return Err(format!("{} must be a vector of I32, is {:?} {:?}", parts[1], starts.dtype, starts.shape));
            }
            if !matches!(block_cols.dtype, Dtype::U8 | Dtype::U16) || block_cols.shape.len() != 1 {
                return Err(format!(
                    "{} must be a vector of U8 or U16, is {:?} {:?}",
                    parts[2], block_cols.dtype, block_cols.shape
                ));
            }
            let stored = blocks.len() + starts.len() + block_cols.len();
            if values * element > sparse::MAX_EXPANSION * stored {
                return Err(format!(
                    "{name} expands from {stored} stored bytes to {} dense ones, more than the {}× a writer may use",
                    values * element,
                    sparse::MAX_EXPANSION
                ));
            }
            let kept = block_cols.shape[0];
            if blocks.shape != [kept, rows, cols] {
                return Err(format!("{} has shape {:?}; expected [{kept}, {rows}, {cols}]", parts[0], blocks.shape));
            }
            let starts_values: Vec<i32> = self.typed(&parts[1], Dtype::I32).into_owned();
            let cols_values: Vec<u16> = match block_cols.dtype {
                Dtype::U8 => self.entry_bytes(&block_cols).iter().map(|&c| c as u16).collect(),
                _ => self.typed(&parts[2], Dtype::U16).into_owned(),
            };
            let mut words = vec![0u64; (values * element).div_ceil(8)];
            let dense = &mut bytemuck::cast_slice_mut(&mut words)[..values * element];
            let grid = Grid { out, reduction, rows, cols };
            sparse::expand(grid, element, self.entry_bytes(&blocks), &starts_values, &cols_values, dense)
                .map_err(|e| format!("{name}: {e}"))?;
            for p in &parts {
                self.tensors.remove(p);
            }
            let source = Source::Expanded { words, len: values * element };
            self.tensors.insert(name, TensorEntry { dtype: blocks.dtype, shape: l.weight_shape.clone(), source });
        }
        Ok(())
    }

    /// Every recorded pattern belongs to a layer, tiles its weights, holds (2:4), and the recorded
    /// sparsity is the weights' own.
    fn check_sparsity(&self) -> Result<(), String> {
        for (layer, record) in &self.sparsity {
            let l = self
                .layers
                .iter()
                .find(|l| &l.name == layer)
                .ok_or_else(|| format!("sparsity recorded for {layer:?}, which is not a weighted layer"))?;
            let weight = self.weight_tensor(layer);
            let (out, reduction) = (l.out_channels, weight.len() / l.out_channels);
            let tiles = match record.pattern {
                Pattern::Channel => false,
                Pattern::TwoFour => reduction.is_multiple_of(4),
                p => p.block().is_some_and(|(r, c)| out.is_multiple_of(r) && reduction.is_multiple_of(c)),
            };
            if !tiles {
                return Err(format!(
                    "layer {layer}: pattern {} does not fit its [{out}, {reduction}] weights",
                    record.pattern
                ));
            }
            if record.pattern == Pattern::TwoFour {
                let values = weight.to_f32();
                if let Some(g) = values.chunks(4).position(|g| g.iter().filter(|&&x| x != 0.0).count() > 2) {
                    return Err(format!("layer {layer}: group {g} of four weights has more than two non-zeros (2:4)"));
                }
            }
            let actual = block_sparsity(&weight, record.pattern);
            if (record.sparsity - actual).abs() > 1e-9 {
                return Err(format!(
                    "layer {layer}: recorded sparsity {} but the weights have {actual}",
                    record.sparsity
                ));
            }
        }
        Ok(())
    }

    fn entry_bytes<'a>(&'a self, t: &'a TensorEntry) -> &'a [u8] {
        match &t.source {
            Source::File(range) => &self.storage.bytes()[range.clone()],
            Source::Expanded { words, len } => &bytemuck::cast_slice(words)[..*len],
        }
    }

    /// A layer's weight as an owned tensor of its stored dtype.
    fn weight_tensor(&self, layer: &str) -> Tensor {
        let name = format!("{layer}.weight");
        let t = &self.tensors[&name];
        let data = match t.dtype {
            Dtype::F32 => TensorData::F32(self.f32s(&name).into_owned()),
            Dtype::F16 => TensorData::F16(self.f16s(&name).into_owned()),
            _ => TensorData::I8(self.i8s(&name).into_owned()),
        };
        Tensor { shape: t.shape.clone(), data }
    }

    /// How a layer was pruned, `None` for a dense layer: the pattern, the share of its blocks that
    /// are zero, and the multiply-adds per customer a kernel that skips zero blocks can skip.
    pub fn layer_sparsity(&self, layer: &str) -> Option<SparseLayer> {
        let record = self.sparsity.get(layer)?;
        let macs = self.layers.iter().find(|l| l.name == layer).map_or(0, |l| l.macs);
        Some(SparseLayer {
            pattern: record.pattern,
            block_sparsity: record.sparsity,
            skippable_macs: (macs as f64 * record.sparsity).round() as u64,
            stored_sparse: self
                .tensors
                .get(&format!("{layer}.weight"))
                .is_some_and(|t| matches!(t.source, Source::Expanded { .. })),
        })
    }

    /// The tensors are exactly the graph's: `<layer>.weight` and `<layer>.bias` of every layer.
    fn check_tensors(&self) -> Result<(), String> {
        let expected: BTreeSet<String> =
            self.layers.iter().flat_map(|l| [format!("{}.weight", l.name), format!("{}.bias", l.name)]).collect();
        if let Some(extra) = self.tensors.keys().find(|k| !expected.contains(*k)) {
            return Err(format!("unexpected tensor {extra:?}: the graph has no such parameter"));
        }
        if let Some(missing) = expected.iter().find(|k| !self.tensors.contains_key(*k)) {
            return Err(format!("missing tensor {missing:?}"));
        }
        for l in &self.layers {
            let w = &self.tensors[&format!("{}.weight", l.name)];
            let b = &self.tensors[&format!("{}.bias", l.name)];
            let bias_dtype = match w.dtype {
                Dtype::F32 | Dtype::F16 => Dtype::F32,
                Dtype::I8 => Dtype::I32,
                d => return Err(format!("{}.weight has dtype {d:?}; expected F32, F16 or I8", l.name)),
            };
            if b.dtype != bias_dtype {
                return Err(format!(
                    "{}.bias has dtype {:?}; {:?} weights need {bias_dtype:?}",
                    l.name, b.dtype, w.dtype
                ));
            }
            if w.shape != l.weight_shape {
                return Err(format!("{}.weight has shape {:?}; the graph needs {:?}", l.name, w.shape, l.weight_shape));
            }
            if b.shape != [l.out_channels] {
                return Err(format!("{}.bias has shape {:?}; the graph needs [{}]", l.name, b.shape, l.out_channels));
            }
            self.check_values(l, w.dtype)?;
        }
        let (trunk, heads) = (self.precisions(false), self.precisions(true));
        if (trunk.contains(&Precision::Int8) || heads.contains(&Precision::Int8))
            && trunk.iter().any(|&p| p != Precision::Int8)
        {
            return Err("int8 layers need int8 weights in every non-head layer (only heads may stay float)".into());
        }
        Ok(())
    }

    fn check_values(&self, l: &LayerInfo, dtype: Dtype) -> Result<(), String> {
        let finite = |v: &[f32], what: &str| match v.iter().position(|x| !x.is_finite()) {
            Some(i) => Err(format!("{}.{what}[{i}] is {} (not finite)", l.name, v[i])),
            None => Ok(()),
        };
        match dtype {
            Dtype::F32 => finite(&self.f32s(&format!("{}.weight", l.name)), "weight")?,
            Dtype::F16 => {
                if let Some(i) = self.f16s(&format!("{}.weight", l.name)).iter().position(|x| !x.is_finite()) {
                    return Err(format!("{}.weight[{i}] is not finite", l.name));
                }
            }
            _ => {
                let w = self.i8s(&format!("{}.weight", l.name));
                if let Some(i) = w.iter().position(|&x| x == i8::MIN) {
                    return Err(format!("{}.weight[{i}] is -128; int8 weights are symmetric in [-127, 127]", l.name));
                }
                let bias = self.i32s(&format!("{}.bias", l.name));
                let fan_in = w.len() / bias.len();
                if let Some(o) = (0..bias.len()).find(|&o| !accumulator_fits(bias[o], &w[o * fan_in..(o + 1) * fan_in]))
                {
                    return Err(format!("layer {}: output channel {o} can overflow the i32 accumulator", l.name));
                }
            }
        }
        if dtype != Dtype::I8 {
            finite(&self.f32s(&format!("{}.bias", l.name)), "bias")?;
        }
        Ok(())
    }

    fn check_quantization(&self) -> Result<(), String> {
        let int8 = self.precision() == Precision::Int8;
        let q = match (&self.meta.quantization, int8) {
            (None, false) => return Ok(()),
            (Some(_), false) => return Err("a float model must not carry a quantization entry".into()),
            (None, true) => return Err("int8 layers but no quantization entry".into()),
            (Some(q), true) => q,
        };
        let g = &self.meta.graph;
        let expected = quantized_tensors(g);
        for t in &expected {
            let a = q.activations.get(t).ok_or_else(|| format!("quantization: no parameters for tensor {t:?}"))?;
            a.validate(&format!("quantization of tensor {t:?}")).map_err(|e| e.to_string())?;
        }
        // Parameters on other tensors (aliases, heads) would be ambiguous: refuse rather than guess.
        if let Some(t) = q.activations.keys().find(|t| !expected.contains(t)) {
            return Err(format!(
                "quantization: tensor {t:?} takes its parameters from its input; it may not have its own"
            ));
        }
        let int8_layer = |name: &str| {
            g.node(name).is_some_and(|n| {
                n.op == Op::GlobalAvgPool || (n.op.has_weights() && self.layer_precision(name) == Precision::Int8)
            })
        };
        if let Some(l) = q.layers.keys().find(|l| !int8_layer(l)) {
            return Err(format!("quantization: {l:?} is not an int8 layer of the graph"));
        }
        let segments = q.segment_map(g, &self.shapes).map_err(|e| e.to_string())?;
        for n in &g.nodes {
            let (channels, requantized) = match n.op {
                Op::GlobalAvgPool => (1, true),
                _ if n.op.has_weights() && self.layer_precision(&n.name) == Precision::Int8 => {
                    (self.shapes[&n.output][0], g.head_of(n).is_none())
                }
                _ => continue,
            };
            let lq =
                q.layers.get(&n.name).ok_or_else(|| format!("quantization: no parameters for layer {}", n.name))?;
            lq.validate(&n.name, channels, requantized).map_err(|e| e.to_string())?;
            // Inputs of convolutions and pools must be single-part u8 tensors.
            if !matches!(n.op, Op::Dense { .. }) {
                segments.single(&n.inputs[0]).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The format version the file was written in (see docs/FORMAT.md).
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn graph(&self) -> &Graph {
        &self.meta.graph
    }

    pub fn quantization(&self) -> Option<&Quantization> {
        self.meta.quantization.as_ref()
    }

    pub fn file_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn layer_precision(&self, layer: &str) -> Precision {
        match self.tensors.get(&format!("{layer}.weight")).map(|t| t.dtype) {
            Some(Dtype::I8) => Precision::Int8,
            Some(Dtype::F16) => Precision::Fp16,
            _ => Precision::Fp32,
        }
    }

    /// The precisions of the non-head (`heads` false) or head layers.
    fn precisions(&self, heads: bool) -> BTreeSet<Precision> {
        self.layers.iter().filter(|l| l.head.is_some() == heads).map(|l| self.layer_precision(&l.name)).collect()
    }

    /// The model's precision: that of its trunk (int8 models may keep float heads); a graph without
    /// trunk layers takes its heads'.
    pub fn precision(&self) -> Precision {
        let (trunk, heads) = (self.precisions(false), self.precisions(true));
        trunk.last().or(heads.last()).copied().unwrap_or(Precision::Fp32)
    }

    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }

    pub fn parameters(&self) -> usize {
        self.layers.iter().map(LayerInfo::parameters).sum()
    }

    fn raw(&self, name: &str, dtype: Dtype) -> &[u8] {
        let t = self.tensors.get(name).unwrap_or_else(|| panic!("validated model has tensor {name}"));
        assert_eq!(t.dtype, dtype, "tensor {name} dtype checked at open");
        self.entry_bytes(t)
    }

    fn typed<T: bytemuck::Pod>(&self, name: &str, dtype: Dtype) -> Cow<'_, [T]> {
        let raw = self.raw(name, dtype);
        match bytemuck::try_cast_slice(raw) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(raw)),
        }
    }

    pub fn f32s(&self, name: &str) -> Cow<'_, [f32]> {
        self.typed(name, Dtype::F32)
    }

    pub fn f16s(&self, name: &str) -> Cow<'_, [f16]> {
        self.typed(name, Dtype::F16)
    }

    pub fn i8s(&self, name: &str) -> Cow<'_, [i8]> {
        self.typed(name, Dtype::I8)
    }

    pub fn i32s(&self, name: &str) -> Cow<'_, [i32]> {
        self.typed(name, Dtype::I32)
    }

    /// A float layer's weights as f32 (f16 widened exactly).
    pub fn weights_f32(&self, layer: &str) -> Vec<f32> {
        let name = format!("{layer}.weight");
        match self.tensors[&name].dtype {
            Dtype::F16 => self.f16s(&name).iter().map(|x| x.to_f32()).collect(),
            _ => self.f32s(&name).into_owned(),
        }
    }

    /// Bytes of tensor data in the file (the header and metadata excluded, sparse layers as stored):
    /// what compression shrinks.
    pub fn tensor_bytes(&self) -> usize {
        self.stored_tensor_bytes
    }

    /// The model as an editable file (its tensors copied out), e.g. to compress it.
    pub fn to_model_file(&self) -> ModelFile {
        let weights = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let data = match t.dtype {
                    Dtype::F32 => TensorData::F32(self.f32s(name).into_owned()),
                    Dtype::F16 => TensorData::F16(self.f16s(name).into_owned()),
                    Dtype::I8 => TensorData::I8(self.i8s(name).into_owned()),
                    _ => TensorData::I32(self.i32s(name).into_owned()),
                };
                (name.clone(), Tensor { shape: t.shape.clone(), data })
            })
            .collect();
        ModelFile { meta: self.meta.clone(), weights }
    }

    /// Fraction of a layer's weights that are exactly zero.
    pub fn sparsity(&self, layer: &str) -> f64 {
        let name = format!("{layer}.weight");
        let (zeros, n) = match self.tensors[&name].dtype {
            Dtype::I8 => {
                let w = self.i8s(&name);
                (w.iter().filter(|&&x| x == 0).count(), w.len())
            }
            _ => {
                let w = self.weights_f32(layer);
                (w.iter().filter(|&&x| x == 0.0).count(), w.len())
            }
        };
        if n == 0 { 0.0 } else { zeros as f64 / n as f64 }
    }

    /// A short content hash (FNV-1a 64 over the file), naming this exact model in logs and replies.
    pub fn hash(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in self.storage.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// A pruned layer of an opened model (see [`Model::layer_sparsity`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SparseLayer {
    pub pattern: Pattern,
    /// Share of the pattern's blocks (2:4, unstructured: weights) that are all zero.
    pub block_sparsity: f64,
    /// Multiply-adds per customer in those zero blocks.
    pub skippable_macs: u64,
    /// Whether the file stores only the non-zero blocks (else the dense tensor, being smaller).
    pub stored_sparse: bool,
}

type ParsedMeta = (ModelMeta, u32, BTreeMap<String, LayerSparsity>);

fn parse_meta(map: Option<&HashMap<String, String>>) -> Result<ParsedMeta, String> {
    let map = map.ok_or("no __metadata__ (a plain safetensors file, not an ltvx model)")?;
    let get = |key: &str| map.get(key);
    let tag_text =
        get(KEY_FORMAT).ok_or("no \"format\" entry in __metadata__ (a plain safetensors file, not an ltvx model)")?;
    let tag: FormatTag = serde_json::from_str(tag_text).map_err(|e| format!("metadata \"format\": {e}"))?;
    if tag.name != FORMAT_NAME {
        return Err(format!("format name is {:?}, not {FORMAT_NAME:?}", tag.name));
    }
    if tag.version > FORMAT_VERSION {
        return Err(format!(
            "format version {} was written by a newer ltvx; this build reads versions up to {FORMAT_VERSION}",
            tag.version
        ));
    }
    if tag.version == 0 {
        return Err("format version 0 does not exist".into());
    }
    let graph_text = get(KEY_GRAPH).ok_or("no \"graph\" entry in __metadata__")?;
    let graph_json: Value = serde_json::from_str(graph_text).map_err(|e| format!("metadata \"graph\": {e}"))?;
    for node in graph_json.get("nodes").and_then(Value::as_array).into_iter().flatten() {
        check_node_fields(node).map_err(|e| format!("metadata \"graph\": {e}"))?;
    }
    let graph: Graph = serde_json::from_value(graph_json).map_err(|e| format!("metadata \"graph\": {e}"))?;
    let quantization = match get(KEY_QUANT) {
        Some(t) => Some(serde_json::from_str(t).map_err(|e| format!("metadata \"quantization\": {e}"))?),
        None => None,
    };
    let doc = |key: &str| -> Result<Value, String> {
        match get(key) {
            None => Ok(Value::Object(Default::default())),
            Some(t) => serde_json::from_str(t).map_err(|e| format!("metadata {key:?}: {e}")),
        }
    };
    let sparsity: BTreeMap<String, LayerSparsity> = match get(KEY_SPARSITY) {
        Some(t) => serde_json::from_str(t).map_err(|e| format!("metadata \"sparsity\": {e}"))?,
        None => BTreeMap::new(),
    };
    let meta = ModelMeta {
        graph,
        quantization,
        feature_spec: doc(KEY_FEATURES)?,
        provenance: doc(KEY_PROVENANCE)?,
        metrics: doc(KEY_METRICS)?,
        patterns: sparsity.iter().map(|(l, r)| (l.clone(), r.pattern)).collect(),
    };
    Ok((meta, tag.version, sparsity))
}
