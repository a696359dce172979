//! The `.ltvx` model file: a safetensors container whose `__metadata__` holds JSON documents (format
//! version, graph, quantization, FeatureSpec, provenance, metrics). See docs/FORMAT.md.
//!
//! Opening validates everything before a byte of tensor data is trusted: the safetensors header
//! (length, offsets, sizes — by the `safetensors` crate), the format version, the graph, that the
//! tensors are exactly the graph's with the right dtypes and shapes, the quantization parameters and
//! the weight values. Any failure is a `Error::Format` naming the problem.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use half::f16;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::graph::{Graph, LayerInfo, Op, Shapes, check_node_fields};
use super::quant::{Quantization, accumulator_fits, quantized_tensors};
use super::tensor::{Tensor, TensorData, Weights};
use crate::error::{Error, Result};

pub const FORMAT_NAME: &str = "ltvx";
/// The newest format this build writes and reads. See docs/FORMAT.md for the compatibility policy.
pub const FORMAT_VERSION: u32 = 1;

/// Metadata keys (each value is a JSON document in a string).
const KEY_FORMAT: &str = "format";
const KEY_GRAPH: &str = "graph";
const KEY_QUANT: &str = "quantization";
const KEY_FEATURES: &str = "feature_spec";
const KEY_PROVENANCE: &str = "provenance";
const KEY_METRICS: &str = "metrics";

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
        let tag = FormatTag { name: FORMAT_NAME.into(), version: FORMAT_VERSION };
        map.insert(KEY_FORMAT.to_string(), json(&tag));
        map.insert(KEY_GRAPH.to_string(), json(&self.meta.graph));
        if let Some(q) = &self.meta.quantization {
            map.insert(KEY_QUANT.to_string(), json(q));
        }
        map.insert(KEY_FEATURES.to_string(), json(&self.meta.feature_spec));
        map.insert(KEY_PROVENANCE.to_string(), json(&self.meta.provenance));
        map.insert(KEY_METRICS.to_string(), json(&self.meta.metrics));
        let bytes = safetensors::serialize(self.weights.iter(), Some(map))
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
    range: Range<usize>,
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
        let meta = parse_meta(header.metadata().as_ref()).map_err(&fail)?;
        let shapes = meta.graph.check().map_err(|e| fail(e.to_string()))?;
        let layers = meta.graph.layers(&shapes);
        let mut tensors = HashMap::new();
        for (name, info) in header.tensors() {
            let (s, e) = info.data_offsets;
            tensors.insert(
                name,
                TensorEntry { dtype: info.dtype, shape: info.shape.clone(), range: data_start + s..data_start + e },
            );
        }
        drop(header);
        let model = Model { origin: origin.clone(), storage, tensors, meta, shapes, layers };
        model.check_tensors().map_err(&fail)?;
        model.check_quantization().map_err(fail)?;
        Ok(model)
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
        &self.storage.bytes()[t.range.clone()]
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

    /// Bytes of tensor data (the header and metadata excluded): what compression shrinks.
    pub fn tensor_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.range.len()).sum()
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

fn parse_meta(map: Option<&HashMap<String, String>>) -> Result<ModelMeta, String> {
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
    Ok(ModelMeta {
        graph,
        quantization,
        feature_spec: doc(KEY_FEATURES)?,
        provenance: doc(KEY_PROVENANCE)?,
        metrics: doc(KEY_METRICS)?,
    })
}
