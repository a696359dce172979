//! The `.ltvx` model file: round trips for every preset and precision, determinism, and hostile
//! files.
//!
//! Hostile files are built by editing the safetensors container directly (8-byte little-endian
//! header length, JSON header, data) with serde_json, so these tests do not depend on the writer.
//! Every hostile open runs under `catch_unwind` and under an allocation watch: it must return
//! `Error::Format`, never panic, and never allocate anything like a size the file merely claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use ltvx::Error;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::tensor::TensorData;
use ltvx::model::{Model, ModelFile, Precision, Preset};
use safetensors::Dtype;
use serde_json::{Map, Value, json};

// ------------------------------------------------------------------------------------------------
// Allocation watch: the largest single allocation made by the current thread since the last reset.

struct Watch;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot has no destructor, but stay safe during thread teardown anyway.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; we only record sizes.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

/// Validation may copy a tensor or the header, but nothing near a size the file only claims.
fn allocation_budget(file_len: usize) -> usize {
    2 * file_len + (1 << 20)
}

// ------------------------------------------------------------------------------------------------
// Models.

const PRECISIONS: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];
const SMALL_PRESETS: [Preset; 2] = [Preset::Tiny, Preset::Base];

fn model_file(preset: Preset, precision: Precision, seed: u64) -> ModelFile {
    init(&InitOptions { preset, precision, seed, sparsity: 0.0, inputs: None, block: None })
        .unwrap_or_else(|e| panic!("init {preset} {precision} seed {seed}: {e}"))
}

/// Serialized models, built once per (preset, precision, seed) for the whole test binary.
fn model_bytes(preset: Preset, precision: Precision, seed: u64) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let key = format!("{preset}/{precision}/{seed}");
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().unwrap().get(&key) {
        return b.clone();
    }
    let bytes = model_file(preset, precision, seed).to_bytes().expect("to_bytes");
    cache.lock().unwrap().insert(key, bytes.clone());
    bytes
}

fn tiny(precision: Precision) -> RawFile {
    RawFile::parse(&model_bytes(Preset::Tiny, precision, 1))
}

/// The raw little-endian bytes of a tensor as the writer holds it.
fn data_bytes(data: &TensorData) -> (Dtype, Vec<u8>) {
    match data {
        TensorData::F32(v) => (Dtype::F32, bytemuck::cast_slice(v).to_vec()),
        TensorData::F16(v) => (Dtype::F16, bytemuck::cast_slice(v).to_vec()),
        TensorData::I8(v) => (Dtype::I8, bytemuck::cast_slice(v).to_vec()),
        TensorData::I32(v) => (Dtype::I32, bytemuck::cast_slice(v).to_vec()),
        TensorData::U16(v) => (Dtype::U16, bytemuck::cast_slice(v).to_vec()),
        TensorData::U8(v) => (Dtype::U8, v.clone()),
    }
}

/// The raw bytes of a tensor as an opened model exposes it through its typed accessors.
fn model_tensor_bytes(model: &Model, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
    let t = model.tensor(name).unwrap_or_else(|| panic!("model has no tensor {name}"));
    let bytes = match t.dtype {
        Dtype::F32 => bytemuck::cast_slice(&model.f32s(name)).to_vec(),
        Dtype::F16 => bytemuck::cast_slice(&model.f16s(name)).to_vec(),
        Dtype::I8 => bytemuck::cast_slice(&model.i8s(name)).to_vec(),
        Dtype::I32 => bytemuck::cast_slice(&model.i32s(name)).to_vec(),
        d => panic!("{name}: unexpected dtype {d:?} in a validated model"),
    };
    (t.dtype, t.shape.clone(), bytes)
}

/// The opened model holds exactly what was written: graph, metadata, tensors, precision.
fn assert_same_model(what: &str, written: &ModelFile, model: &Model, precision: Precision) {
    assert_eq!(model.graph(), &written.meta.graph, "{what}: graph");
    assert_eq!(model.meta.quantization, written.meta.quantization, "{what}: quantization");
    assert_eq!(model.quantization().is_some(), precision == Precision::Int8, "{what}: quantization presence");
    assert_eq!(model.meta.feature_spec, written.meta.feature_spec, "{what}: feature_spec");
    assert_eq!(model.meta.provenance, written.meta.provenance, "{what}: provenance");
    assert_eq!(model.meta.metrics, written.meta.metrics, "{what}: metrics");
    assert_eq!(model.precision(), precision, "{what}: precision");
    for l in &model.layers {
        assert_eq!(model.layer_precision(&l.name), precision, "{what}: layer {}", l.name);
    }
    let names: BTreeSet<String> = RawFile::parse(model.file_bytes()).tensor_names().into_iter().collect();
    let expected: BTreeSet<String> = written.weights.keys().cloned().collect();
    assert_eq!(names, expected, "{what}: tensor names");
    for (name, tensor) in &written.weights {
        let (dtype, bytes) = data_bytes(&tensor.data);
        let (got_dtype, got_shape, got_bytes) = model_tensor_bytes(model, name);
        assert_eq!(got_dtype, dtype, "{what}: {name} dtype");
        assert_eq!(got_shape, tensor.shape, "{what}: {name} shape");
        assert!(got_bytes == bytes, "{what}: {name} bytes differ");
    }
}

// ------------------------------------------------------------------------------------------------
// A safetensors container taken apart, independent of ltvx's writer.

#[derive(Clone, Debug)]
struct RawTensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct RawFile {
    header: Map<String, Value>,
    data: Vec<u8>,
}

const METADATA: &str = "__metadata__";

impl RawFile {
    fn parse(bytes: &[u8]) -> RawFile {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = serde_json::from_slice(&bytes[8..8 + n]).expect("a well-formed header");
        RawFile { header, data: bytes[8 + n..].to_vec() }
    }

    fn to_bytes(&self) -> Vec<u8> {
        assemble(serde_json::to_string(&self.header).unwrap().as_bytes(), &self.data)
    }

    fn tensor_names(&self) -> Vec<String> {
        self.header.keys().filter(|k| *k != METADATA).cloned().collect()
    }

    fn entry(&mut self, tensor: &str) -> &mut Map<String, Value> {
        self.header.get_mut(tensor).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("no tensor {tensor}"))
    }

    fn range(&self, tensor: &str) -> Range<usize> {
        let offsets = &self.header[tensor]["data_offsets"];
        offsets[0].as_u64().unwrap() as usize..offsets[1].as_u64().unwrap() as usize
    }

    fn bytes_mut(&mut self, tensor: &str) -> &mut [u8] {
        let r = self.range(tensor);
        &mut self.data[r]
    }

    /// The tensors in file order.
    fn tensors(&self) -> Vec<RawTensor> {
        let mut names = self.tensor_names();
        names.sort_by_key(|n| self.range(n).start);
        names
            .into_iter()
            .map(|name| {
                let e = &self.header[&name];
                RawTensor {
                    dtype: e["dtype"].as_str().unwrap().to_string(),
                    shape: serde_json::from_value(e["shape"].clone()).unwrap(),
                    bytes: self.data[self.range(&name)].to_vec(),
                    name,
                }
            })
            .collect()
    }

    /// Edits the list of tensors, then lays the data out again with consistent offsets.
    fn edit_tensors(&mut self, edit: impl FnOnce(&mut Vec<RawTensor>)) {
        let mut tensors = self.tensors();
        edit(&mut tensors);
        self.header.retain(|k, _| k == METADATA);
        self.data.clear();
        for t in tensors {
            let start = self.data.len();
            self.data.extend_from_slice(&t.bytes);
            self.header
                .insert(t.name, json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, self.data.len()]}));
        }
    }

    /// Replaces one tensor's dtype, shape and bytes (offsets are recomputed).
    fn replace_tensor(&mut self, name: &str, dtype: &str, shape: Vec<usize>, bytes: Vec<u8>) {
        self.edit_tensors(|ts| {
            let t = ts.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
            *t = RawTensor { name: name.into(), dtype: dtype.into(), shape, bytes };
        });
    }

    fn metadata(&mut self) -> &mut Map<String, Value> {
        self.header.get_mut(METADATA).and_then(Value::as_object_mut).expect("__metadata__")
    }

    /// A metadata entry's JSON document.
    fn meta(&self, key: &str) -> Value {
        serde_json::from_str(self.header[METADATA][key].as_str().expect("a string entry")).expect("JSON")
    }

    fn set_meta(&mut self, key: &str, doc: &Value) {
        self.set_meta_text(key, &doc.to_string());
    }

    fn set_meta_text(&mut self, key: &str, text: &str) {
        self.metadata().insert(key.into(), Value::String(text.into()));
    }

    fn edit_meta(&mut self, key: &str, edit: impl FnOnce(&mut Value)) {
        let mut doc = self.meta(key);
        edit(&mut doc);
        self.set_meta(key, &doc);
    }

    fn remove_meta(&mut self, key: &str) {
        self.metadata().remove(key).unwrap_or_else(|| panic!("no metadata entry {key}"));
    }
}

/// 8-byte little-endian header length, the header (padded with spaces to 8 bytes), the data.
fn assemble(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

fn with_header_len(bytes: &[u8], n: u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[..8].copy_from_slice(&n.to_le_bytes());
    out
}

/// A node of a graph document, by name.
fn node<'a>(graph: &'a mut Value, name: &str) -> &'a mut Value {
    graph["nodes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// A small deterministic byte generator (SplitMix64), independent of the crate's own RNG.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..len).map(|_| next() as u8).collect()
}

// ------------------------------------------------------------------------------------------------
// Rejection checks.

/// Opens hostile bytes; they must give `Error::Format` without a panic or a huge allocation.
/// Returns the reason.
fn reject(what: &str, bytes: Vec<u8>) -> String {
    let len = bytes.len();
    LARGEST.with(|l| l.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| Model::from_bytes("hostile.ltvx", bytes)));
    let largest = LARGEST.with(Cell::get);
    let result = result.unwrap_or_else(|_| panic!("{what}: Model::from_bytes panicked"));
    assert!(
        largest <= allocation_budget(len),
        "{what}: one allocation of {largest} bytes while opening a {len}-byte file"
    );
    match result {
        Ok(_) => panic!("{what}: the hostile file was accepted"),
        Err(Error::Format { origin, reason }) => {
            assert_eq!(origin, "hostile.ltvx", "{what}: origin");
            assert!(!reason.is_empty(), "{what}: empty reason");
            reason
        }
        Err(e) => panic!("{what}: expected a format error, got {e:?}"),
    }
}

/// Like [`reject`], and the reason must mention every needle (case-insensitively).
fn reject_with(what: &str, bytes: Vec<u8>, needles: &[&str]) {
    let reason = reject(what, bytes);
    let lower = reason.to_lowercase();
    for n in needles {
        assert!(lower.contains(&n.to_lowercase()), "{what}: the reason {reason:?} does not mention {n:?}");
    }
}

/// Edits a copy of `file` and expects the result to be rejected for a reason naming `needles`.
fn reject_edit(what: &str, file: &RawFile, edit: impl FnOnce(&mut RawFile), needles: &[&str]) {
    let mut f = file.clone();
    edit(&mut f);
    reject_with(what, f.to_bytes(), needles);
}

/// The untouched file opens: an edit test that fails for the edit, not for the baseline.
fn accepts(file: &RawFile) {
    Model::from_bytes("baseline", file.to_bytes()).expect("the re-assembled baseline opens");
}

// ------------------------------------------------------------------------------------------------
// Round trips and determinism.

#[test]
fn round_trip_every_small_preset_and_precision() {
    let dir = tempfile::tempdir().unwrap();
    for preset in SMALL_PRESETS {
        for precision in PRECISIONS {
            let what = format!("{preset} {precision}");
            let written = model_file(preset, precision, 3);
            let path = dir.path().join(format!("{preset}-{precision}.ltvx"));
            written.save(&path).unwrap_or_else(|e| panic!("{what}: save: {e}"));
            let opened = Model::open(&path).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            assert_same_model(&what, &written, &opened, precision);
            assert_eq!(opened.origin(), path.display().to_string());
            // The file on disk is exactly what to_bytes produces, and opens from memory as well.
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(opened.file_bytes(), &bytes[..], "{what}: mapped bytes");
            let from_memory = Model::from_bytes("memory", bytes).unwrap();
            assert_same_model(&what, &written, &from_memory, precision);
            let via_into = written.clone().into_model().unwrap();
            assert_same_model(&what, &written, &via_into, precision);
        }
    }
}

#[test]
fn tensors_are_aligned_to_their_element_size() {
    for preset in SMALL_PRESETS {
        for precision in PRECISIONS {
            let bytes = model_bytes(preset, precision, 1);
            let file = RawFile::parse(&bytes);
            let data_start = bytes.len() - file.data.len();
            assert_eq!(data_start % 8, 0, "{preset} {precision}: header padded to 8 bytes");
            for t in file.tensors() {
                let size = match t.dtype.as_str() {
                    "F32" | "I32" => 4,
                    "F16" => 2,
                    _ => 1,
                };
                let at = data_start + file.range(&t.name).start;
                assert_eq!(at % size, 0, "{preset} {precision}: {} at byte {at}", t.name);
            }
        }
    }
}

#[test]
fn unaligned_tensors_from_a_foreign_writer_read_the_same() {
    // A header of odd length (legal safetensors) puts every tensor at an odd address.
    for precision in PRECISIONS {
        let bytes = model_bytes(Preset::Tiny, precision, 1);
        let aligned = Model::from_bytes("aligned", bytes.clone()).unwrap();
        let file = RawFile::parse(&bytes);
        let mut header = serde_json::to_vec(&file.header).unwrap();
        if header.len().is_multiple_of(2) {
            header.push(b' ');
        }
        let mut odd = (header.len() as u64).to_le_bytes().to_vec();
        odd.extend_from_slice(&header);
        odd.extend_from_slice(&file.data);
        let unaligned = Model::from_bytes("unaligned", odd).unwrap();
        for t in file.tensors() {
            assert_eq!(model_tensor_bytes(&unaligned, &t.name), model_tensor_bytes(&aligned, &t.name), "{}", t.name);
        }
    }
}

#[test]
fn unknown_metadata_keys_are_ignored() {
    let mut file = tiny(Precision::Int8);
    file.set_meta_text("x-trained-by", "someone else's tool");
    file.set_meta_text("x-not-json", "{{{");
    let model = Model::from_bytes("extra keys", file.to_bytes()).unwrap();
    assert_eq!(model.precision(), Precision::Int8);
}

#[test]
fn base_is_value_model_v1_in_every_precision() {
    for precision in PRECISIONS {
        let m = Model::from_bytes("base", model_bytes(Preset::Base, precision, 1)).unwrap();
        assert_eq!(m.macs(), 517_760, "{precision}");
        assert_eq!(m.parameters(), 70_921, "{precision}");
    }
}

#[test]
fn large_fp32_round_trips_at_metadata_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.ltvx");
    let written = model_file(Preset::Large, Precision::Fp32, 5);
    written.save(&path).unwrap();
    let opened = Model::open(&path).unwrap();
    assert_eq!(opened.graph(), &written.meta.graph);
    assert_eq!(opened.meta.provenance, written.meta.provenance);
    assert_eq!(opened.precision(), Precision::Fp32);
    assert!(opened.quantization().is_none());
    assert!(opened.macs() >= 50 * 517_760, "large has {} MACs", opened.macs());
    let names: BTreeSet<String> = RawFile::parse(opened.file_bytes()).tensor_names().into_iter().collect();
    assert_eq!(names, written.weights.keys().cloned().collect::<BTreeSet<_>>());
    for (name, t) in &written.weights {
        let entry = opened.tensor(name).unwrap();
        assert_eq!((entry.dtype, &entry.shape), (Dtype::F32, &t.shape), "{name}");
    }
}

#[test]
fn same_seed_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for preset in SMALL_PRESETS {
        for precision in PRECISIONS {
            let what = format!("{preset} {precision}");
            let a = model_file(preset, precision, 11);
            let b = model_file(preset, precision, 11);
            let (pa, pb) = (dir.path().join("a.ltvx"), dir.path().join("b.ltvx"));
            a.save(&pa).unwrap();
            b.save(&pb).unwrap();
            let (fa, fb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
            assert!(fa == fb, "{what}: two saves of the same seed differ");
            assert!(a.to_bytes().unwrap() == a.to_bytes().unwrap(), "{what}: to_bytes is not repeatable");
        }
    }
}

#[test]
fn same_seed_same_weights_and_metadata() {
    // What determinism means without the container's byte layout: every tensor and every
    // metadata document.
    for preset in SMALL_PRESETS {
        for precision in PRECISIONS {
            let (a, b) = (model_file(preset, precision, 11), model_file(preset, precision, 11));
            assert_eq!(a.weights, b.weights, "{preset} {precision}");
            assert_eq!(a.meta, b.meta, "{preset} {precision}");
        }
    }
}

#[test]
fn another_seed_other_weights() {
    for preset in SMALL_PRESETS {
        for precision in PRECISIONS {
            let (a, b) = (model_file(preset, precision, 11), model_file(preset, precision, 12));
            assert!(a.to_bytes().unwrap() != b.to_bytes().unwrap(), "{preset} {precision}");
            for (name, t) in &a.weights {
                assert_ne!(t, &b.weights[name], "{preset} {precision}: {name} does not depend on the seed");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Damaged containers.

/// Every prefix in the first 2 KiB, then a few hundred spread over the rest of the file.
fn truncation_points(len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..len.min(2048)).collect();
    let rest = len.saturating_sub(2048);
    points.extend((0..300).map(|i| 2048 + i * rest / 300));
    points.extend([len - 8, len - 4, len - 1]);
    points.retain(|&p| p < len);
    points.sort_unstable();
    points.dedup();
    points
}

#[test]
fn truncated_files_are_rejected() {
    for (preset, precision) in
        [(Preset::Tiny, Precision::Int8), (Preset::Tiny, Precision::Fp16), (Preset::Base, Precision::Fp32)]
    {
        let bytes = model_bytes(preset, precision, 1);
        for at in truncation_points(bytes.len()) {
            reject(&format!("{preset} {precision} truncated at {at} of {}", bytes.len()), bytes[..at].to_vec());
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = model_bytes(Preset::Tiny, Precision::Fp32, 1);
    bytes.extend_from_slice(&[0; 16]);
    reject_with("16 bytes appended", bytes, &["safetensors header"]);
}

#[test]
fn header_length_that_lies() {
    let bytes = model_bytes(Preset::Tiny, Precision::Fp32, 1);
    let real = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let len = bytes.len() as u64;
    for n in [real - 1, real + 1, len - 8, len - 7, len, len + 1, 1 << 20] {
        reject_with(&format!("header length {n} (real {real})"), with_header_len(&bytes, n), &["header"]);
    }
    let small = bytes[..64].to_vec();
    for n in [99_999_999, 100_000_000, 100_000_001, 1 << 32, 1 << 63, u64::MAX - 7, u64::MAX] {
        reject_with(&format!("header length {n}, 64-byte file"), with_header_len(&small, n), &["header"]);
        reject_with(&format!("header length {n}, whole file"), with_header_len(&bytes, n), &["header"]);
    }
}

#[test]
fn empty_and_tiny_files() {
    reject_with("empty file", Vec::new(), &["header"]);
    for n in 1..8 {
        reject_with(&format!("{n} bytes"), vec![0; n], &["header"]);
    }
    reject_with("8 zero bytes", vec![0; 8], &["header"]);
    reject_with("header {}", assemble(b"{}", &[]), &["__metadata__"]);
    reject_with("16 zero bytes", vec![0; 16], &["header"]);
}

#[test]
fn random_bytes_are_rejected() {
    for seed in 0..8 {
        for len in [1, 7, 8, 9, 64, 1000, 4096, 65_537] {
            reject(&format!("random bytes seed {seed} len {len}"), random_bytes(seed, len));
        }
    }
    // Random bytes behind a plausible header length: the JSON parser sees garbage.
    for seed in 0..8 {
        let mut bytes = random_bytes(100 + seed, 4096);
        bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
        reject_with(&format!("plausible length, random header, seed {seed}"), bytes, &["header"]);
    }
}

#[test]
fn overlapping_and_out_of_range_offsets() {
    let file = tiny(Precision::Fp32);
    accepts(&file);
    let order: Vec<String> = file.tensors().into_iter().map(|t| t.name).collect();
    let (first, second, last) = (&order[0], &order[1], order.last().unwrap());
    let first_range = file.range(first);
    let set = |f: &mut RawFile, name: &str, s: usize, e: usize| {
        f.entry(name).insert("data_offsets".into(), json!([s, e]));
    };
    reject_edit(
        "second tensor overlaps the first",
        &file,
        |f| {
            let r = f.range(second);
            set(f, second, r.start - 4, r.end - 4)
        },
        &["offset"],
    );
    reject_edit(
        "two tensors at the same offsets",
        &file,
        |f| {
            let r = f.range(first);
            set(f, second, r.start, r.end);
        },
        &["safetensors header"],
    );
    reject_edit(
        "last tensor ends past the data",
        &file,
        |f| {
            let r = f.range(last);
            set(f, last, r.start, r.end + 4);
        },
        &["safetensors header"],
    );
    reject_edit("offsets far out of range", &file, |f| set(f, last, 1 << 40, (1 << 40) + 4), &["offset"]);
    reject_edit("offsets near usize::MAX", &file, |f| set(f, last, usize::MAX - 3, usize::MAX), &["offset"]);
    reject_edit("end before start", &file, |f| set(f, first, first_range.end, first_range.start), &["offset"]);
    reject_edit("negative offset", &file, |f| set_raw(f, first, json!([-4, 0])), &["safetensors header"]);
    reject_edit(
        "a gap between tensors",
        &file,
        |f| {
            let r = f.range(second);
            set(f, second, r.start + 4, r.end + 4);
        },
        &["safetensors header"],
    );
    reject_edit(
        "shape claims more elements than the offsets hold",
        &file,
        |f| {
            f.entry(last).insert("shape".into(), json!([1 << 20]));
        },
        &["safetensors header"],
    );
    reject_edit(
        "shape whose element count overflows",
        &file,
        |f| {
            f.entry(last).insert("shape".into(), json!([1u64 << 40, 1u64 << 40]));
        },
        &["safetensors header"],
    );
}

fn set_raw(f: &mut RawFile, name: &str, offsets: Value) {
    f.entry(name).insert("data_offsets".into(), offsets);
}

// ------------------------------------------------------------------------------------------------
// Tensors that do not fit the graph.

#[test]
fn wrong_dtype() {
    let file = tiny(Precision::Fp32);
    let weight = file.tensors().into_iter().find(|t| t.name == "conv1.weight").unwrap();
    let n: usize = weight.shape.iter().product();
    let same_size = |dtype: &'static str| {
        let w = weight.clone();
        move |f: &mut RawFile| f.replace_tensor("conv1.weight", dtype, w.shape.clone(), w.bytes.clone())
    };
    reject_edit("conv1.weight as I32", &file, same_size("I32"), &["conv1.weight", "dtype", "I32"]);
    reject_edit("conv1.weight as U32", &file, same_size("U32"), &["conv1.weight", "dtype"]);
    let shape = weight.shape.clone();
    reject_edit(
        "conv1.weight as F64",
        &file,
        |f| f.replace_tensor("conv1.weight", "F64", shape, vec![0; 8 * n]),
        &["conv1.weight", "dtype", "F64"],
    );
    reject_edit(
        "conv1.weight as BF16",
        &file,
        |f| f.replace_tensor("conv1.weight", "BF16", weight.shape.clone(), vec![0; 2 * n]),
        &["conv1.weight", "dtype"],
    );
    reject_edit(
        "conv1.weight as U8",
        &file,
        |f| f.replace_tensor("conv1.weight", "U8", weight.shape.clone(), vec![0; n]),
        &["conv1.weight", "dtype"],
    );
    reject_edit(
        "unknown dtype name",
        &file,
        |f| {
            f.entry("conv1.weight").insert("dtype".into(), json!("F128"));
        },
        &["safetensors header"],
    );
    // A float weight needs an F32 bias; an int8 weight needs an I32 bias.
    let bias_len = file.range("conv1.bias").len();
    reject_edit(
        "fp32 conv1.bias as I32",
        &file,
        |f| f.replace_tensor("conv1.bias", "I32", vec![bias_len / 4], vec![0; bias_len]),
        &["conv1.bias", "dtype"],
    );
    let int8 = tiny(Precision::Int8);
    let bias_len = int8.range("conv1.bias").len();
    reject_edit(
        "int8 conv1.bias as F32",
        &int8,
        |f| f.replace_tensor("conv1.bias", "F32", vec![bias_len / 4], vec![0; bias_len]),
        &["conv1.bias", "dtype"],
    );
    let weight_len = int8.range("conv1.weight").len();
    reject_edit(
        "int8 conv1.weight as U8",
        &int8,
        |f| f.replace_tensor("conv1.weight", "U8", vec![8, 4, 3], vec![1; weight_len]),
        &["conv1.weight", "dtype"],
    );
}

#[test]
fn wrong_shape() {
    let file = tiny(Precision::Fp32);
    accepts(&file);
    // Tiny: conv1 is 8 out × 4 in × kernel 3; fc1 is 32 × (16 + 32).
    let reshape = |name: &'static str, shape: Value| {
        move |f: &mut RawFile| {
            f.entry(name).insert("shape".into(), shape);
        }
    };
    reject_edit("conv1.weight [8, 12]", &file, reshape("conv1.weight", json!([8, 12])), &["conv1.weight", "shape"]);
    reject_edit("conv1.weight [4, 8, 3]", &file, reshape("conv1.weight", json!([4, 8, 3])), &["conv1.weight", "shape"]);
    reject_edit("conv1.weight [96]", &file, reshape("conv1.weight", json!([96])), &["conv1.weight", "shape"]);
    reject_edit("conv1.bias [8, 1]", &file, reshape("conv1.bias", json!([8, 1])), &["conv1.bias", "shape"]);
    reject_edit("fc1.weight [48, 32]", &file, reshape("fc1.weight", json!([48, 32])), &["fc1.weight", "shape"]);
    // The same tensors, but a graph whose geometry no longer matches them.
    reject_edit(
        "graph says conv1 has 9 outputs",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1")["out_channels"] = json!(9)),
        &["conv1", "shape"],
    );
    reject_edit(
        "graph says conv1 has kernel 5",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1")["kernel"] = json!(5)),
        &["conv1.weight", "shape"],
    );
}

#[test]
fn extra_and_missing_tensors() {
    let file = tiny(Precision::Fp32);
    reject_edit(
        "an extra tensor",
        &file,
        |f| {
            f.edit_tensors(|ts| {
                ts.push(RawTensor {
                    name: "conv9.weight".into(),
                    dtype: "F32".into(),
                    shape: vec![2],
                    bytes: vec![0; 8],
                })
            })
        },
        &["unexpected tensor", "conv9.weight"],
    );
    for missing in ["conv1.weight", "fc1.bias", "segment_logits.weight"] {
        reject_edit(
            &format!("{missing} removed"),
            &file,
            |f| f.edit_tensors(|ts| ts.retain(|t| t.name != missing)),
            &["missing tensor", missing],
        );
    }
    reject_edit("no tensors at all", &file, |f| f.edit_tensors(Vec::clear), &["missing tensor"]);
}

// ------------------------------------------------------------------------------------------------
// Metadata.

#[test]
fn future_format_version() {
    let file = tiny(Precision::Fp32);
    for version in [3u64, 7, u32::MAX as u64] {
        reject_edit(
            &format!("format version {version}"),
            &file,
            |f| f.set_meta("format", &json!({"name": "ltvx", "version": version})),
            // Names both versions: the file's and the newest this build reads.
            &["version", &version.to_string(), "newer", "up to 2"],
        );
    }
    reject_edit(
        "format version 0",
        &file,
        |f| f.set_meta("format", &json!({"name": "ltvx", "version": 0})),
        &["version 0"],
    );
    for version in [json!(-1), json!(1.5), json!("1"), json!(1u64 << 40), Value::Null] {
        reject_edit(
            &format!("format version {version}"),
            &file,
            |f| f.set_meta("format", &json!({"name": "ltvx", "version": version})),
            &["format"],
        );
    }
}

#[test]
fn format_entry_names_ltvx() {
    let file = tiny(Precision::Fp32);
    assert_eq!(file.meta("format"), json!({"name": "ltvx", "version": 1}));
    for name in ["onnx", "LTVX", ""] {
        reject_edit(
            &format!("format name {name:?}"),
            &file,
            |f| f.set_meta("format", &json!({"name": name, "version": 1})),
            &["format name", "ltvx"],
        );
    }
    reject_edit("format entry not JSON", &file, |f| f.set_meta_text("format", "ltvx v1"), &["format"]);
    reject_edit("format entry without a name", &file, |f| f.set_meta("format", &json!({"version": 1})), &["format"]);
}

#[test]
fn plain_safetensors_without_format_entry() {
    let file = tiny(Precision::Fp32);
    reject_edit("no format entry", &file, |f| f.remove_meta("format"), &["format", "plain safetensors"]);
    reject_edit(
        "no __metadata__ at all",
        &file,
        |f| {
            f.header.remove(METADATA);
        },
        &["plain safetensors"],
    );
    // A real plain safetensors file written by Python (the ONNX Runtime fixture).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/value_model_v1_ort.safetensors");
    reject_with("the ORT fixture", std::fs::read(fixture).unwrap(), &["format", "plain safetensors"]);
}

#[test]
fn graph_entry_must_be_a_valid_graph() {
    let file = tiny(Precision::Fp32);
    reject_edit("graph not JSON", &file, |f| f.set_meta_text("graph", "{\"name\": \"ltvx-tiny\", "), &["graph"]);
    reject_edit("graph missing", &file, |f| f.remove_meta("graph"), &["graph"]);
    reject_edit("graph is a number", &file, |f| f.set_meta_text("graph", "42"), &["graph"]);
    reject_edit(
        "graph with an unknown op",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1_relu")["op"] = json!("gelu")),
        &["graph"],
    );
    reject_edit(
        "graph nested beyond the parser's depth",
        &file,
        |f| f.set_meta_text("graph", &format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))),
        &["graph"],
    );
}

#[test]
fn graph_with_dangling_duplicate_or_cyclic_tensors() {
    let file = tiny(Precision::Fp32);
    reject_edit(
        "input references an undefined tensor",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv2")["inputs"] = json!(["nowhere"])),
        &["conv2", "nowhere", "not defined"],
    );
    reject_edit(
        "input references a later tensor (a cycle)",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1")["inputs"] = json!(["conv2_relu"])),
        &["conv1", "not defined before"],
    );
    reject_edit(
        "a node reads its own output",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1_relu")["inputs"] = json!(["conv1_relu"])),
        &["not defined before"],
    );
    reject_edit(
        "two nodes write the same tensor",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1_relu")["output"] = json!("conv1")),
        &["defined twice"],
    );
    reject_edit(
        "a node overwrites a graph input",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv1")["output"] = json!("seq")),
        &["defined twice"],
    );
    reject_edit(
        "two nodes with one name",
        &file,
        |f| f.edit_meta("graph", |g| node(g, "conv2")["name"] = json!("conv1")),
        &["conv1", "used twice"],
    );
    reject_edit(
        "a head that no node produces",
        &file,
        |f| f.edit_meta("graph", |g| g["heads"]["ltv"] = json!("ghost")),
        &["ghost"],
    );
    reject_edit(
        "absurd input sizes",
        &file,
        |f| f.edit_meta("graph", |g| g["inputs"]["seq_len"] = json!(1u64 << 40)),
        &["seq_len"],
    );
}

#[test]
fn graph_whose_sizes_overflow() {
    let file = tiny(Precision::Fp32);
    // Every dimension within bounds, the products far beyond: each must be refused by its own rule.
    let cases: [(&str, usize, usize, usize, usize, &str); 3] = [
        ("65536² input values", 65536, 65536, 8, 3, "sequence input"),
        ("2^44 weights in conv1", 64, 64, 65536, 65536, "conv1"),
        ("2^44 multiply-adds", 64, 65536, 64, 4096, "multiply-adds"),
    ];
    for (what, channels, weeks, out_channels, kernel, needle) in cases {
        reject_edit(
            what,
            &file,
            |f| {
                f.edit_meta("graph", |g| {
                    g["inputs"]["seq_channels"] = json!(channels);
                    g["inputs"]["seq_len"] = json!(weeks);
                    node(g, "conv1")["out_channels"] = json!(out_channels);
                    node(g, "conv1")["kernel"] = json!(kernel);
                })
            },
            &[needle],
        );
    }
}

/// Inserts `n` ReLU nodes between `conv1_relu` and `conv1_pool` of the tiny graph.
fn relu_chain(graph: &mut Value, n: usize) {
    let nodes = graph["nodes"].as_array_mut().unwrap();
    let at = nodes.iter().position(|x| x["name"] == "conv1_relu").unwrap() + 1;
    let chain = (0..n).map(|i| {
        let input = if i == 0 { "conv1_relu".to_string() } else { format!("r{}", i - 1) };
        json!({"name": format!("r{i}"), "op": "relu", "inputs": [input], "output": format!("r{i}")})
    });
    nodes.splice(at..at, chain.collect::<Vec<_>>());
    node(graph, "conv1_pool")["inputs"] = json!([format!("r{}", n - 1)]);
}

#[test]
fn a_few_extra_relus_are_fine() {
    let mut file = tiny(Precision::Int8);
    file.edit_meta("graph", |g| relu_chain(g, 100));
    let model = Model::from_bytes("relus", file.to_bytes()).unwrap();
    assert_eq!(model.graph().nodes.len(), tiny(Precision::Int8).meta("graph")["nodes"].as_array().unwrap().len() + 100);
}

#[test]
fn long_relu_chain_does_not_crash_the_process() {
    // A stack overflow aborts the whole process, so the open runs in a child: `ltvx info`.
    let mut file = tiny(Precision::Int8);
    file.edit_meta("graph", |g| relu_chain(g, 60_000));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.ltvx");
    std::fs::write(&path, file.to_bytes()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ltvx")).arg("info").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "ltvx info was killed: {}\n{stderr}", out.status);
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{stderr}");
    if !out.status.success() {
        assert!(stderr.starts_with("ltvx: error: "), "{stderr}");
    }
}

#[test]
fn float_trunk_with_int8_heads() {
    let int8 = tiny(Precision::Int8);
    let donors = int8.tensors();
    let is_head = |name: &str| ["ltv.", "churn_logit.", "segment_logits."].iter().any(|h| name.starts_with(h));
    reject_edit(
        "fp32 trunk, int8 heads",
        &tiny(Precision::Fp32),
        |f| {
            f.edit_tensors(|ts| {
                for t in ts.iter_mut().filter(|t| is_head(&t.name)) {
                    *t = donors.iter().find(|d| d.name == t.name).unwrap().clone();
                }
            });
            f.set_meta("quantization", &int8.meta("quantization"));
        },
        &["int8"],
    );
}

#[test]
fn other_metadata_entries_must_be_json() {
    let file = tiny(Precision::Fp32);
    for key in ["feature_spec", "provenance", "metrics", "quantization"] {
        reject_edit(&format!("{key} not JSON"), &file, |f| f.set_meta_text(key, "{oops"), &[key]);
    }
}

// ------------------------------------------------------------------------------------------------
// Quantization parameters and weight values.

/// A quantization edit at a JSON pointer inside the `quantization` entry.
fn quant_edit(pointer: &'static str, value: Value) -> impl FnOnce(&mut RawFile) {
    move |f: &mut RawFile| {
        f.edit_meta("quantization", |q| {
            *q.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer} in quantization")) = value
        })
    }
}

#[test]
fn int8_without_quantization_entry() {
    let file = tiny(Precision::Int8);
    accepts(&file);
    reject_edit("quantization removed", &file, |f| f.remove_meta("quantization"), &["quantization"]);
    reject_edit(
        "no parameters for conv1's output",
        &file,
        |f| f.edit_meta("quantization", |q| _ = q["activations"].as_object_mut().unwrap().remove("conv1")),
        &["quantization", "conv1"],
    );
    reject_edit(
        "no parameters for layer fc1",
        &file,
        |f| f.edit_meta("quantization", |q| _ = q["layers"].as_object_mut().unwrap().remove("fc1")),
        &["quantization", "fc1"],
    );
    let float = tiny(Precision::Fp32);
    let q = file.meta("quantization");
    reject_edit(
        "a float model with a quantization entry",
        &float,
        |f| f.set_meta("quantization", &q),
        &["quantization"],
    );
}

#[test]
fn int8_requantization_parameters() {
    let file = tiny(Precision::Int8);
    for (what, pointer, value, needle) in [
        ("multiplier 0", "/layers/conv1/multiplier/0", json!(0), "multiplier"),
        ("multiplier -5", "/layers/fc1/multiplier/3", json!(-5), "multiplier"),
        ("GAP multiplier 0", "/layers/gap/multiplier/0", json!(0), "multiplier"),
        ("shift 0", "/layers/conv2/shift/1", json!(0), "shift"),
        ("shift 63", "/layers/conv1/shift/0", json!(63), "shift"),
        ("shift 255", "/layers/fc1/shift/0", json!(255), "shift"),
        ("shift 256 (not a u8)", "/layers/fc1/shift/0", json!(256), "quantization"),
        ("multiplier 2^31 (not an i32)", "/layers/conv1/multiplier/0", json!(1u64 << 31), "quantization"),
        ("one multiplier too few", "/layers/conv1/multiplier", json!([1 << 30]), "multipliers"),
        ("multipliers on a head", "/layers/ltv/multiplier", json!([1 << 30, 1 << 30, 1 << 30]), "multipliers"),
    ] {
        reject_edit(what, &file, quant_edit(pointer, value), &[needle]);
    }
}

#[test]
fn int8_scales() {
    let file = tiny(Precision::Int8);
    for (what, pointer, value, needle) in [
        ("negative input scale", "/activations/seq/scale", json!(-0.5), "scale"),
        ("zero activation scale", "/activations/conv1/scale", json!(0.0), "scale"),
        ("zero inv_scale", "/activations/static/inv_scale", json!(0.0), "inv_scale"),
        // Out of f32's range: JSON numbers are read exactly (serde_json's float_roundtrip), so the
        // parser refuses it before validation would.
        ("scale 1e39 (infinite as f32)", "/activations/fc1/scale", json!(1e39), "quantization"),
        ("scale null", "/activations/seq/scale", Value::Null, "quantization"),
        ("negative accumulator scale", "/layers/conv1/acc_scale/0", json!(-1.0), "accumulator scale"),
        ("zero head accumulator scale", "/layers/ltv/acc_scale/2", json!(0.0), "accumulator scale"),
        ("zero point 256", "/activations/seq/zero_point", json!(256), "quantization"),
        ("one accumulator scale too few", "/layers/conv2/acc_scale", json!([0.1]), "accumulator scales"),
    ] {
        reject_edit(what, &file, quant_edit(pointer, value), &[needle]);
    }
    // JSON has no NaN, but Python's json.dumps writes `NaN` and `Infinity` literals.
    for literal in ["NaN", "Infinity", "-Infinity"] {
        reject_edit(
            &format!("scale {literal}"),
            &file,
            |f| {
                let mut q = f.meta("quantization");
                q["activations"]["seq"]["scale"] = json!("@@");
                f.set_meta_text("quantization", &q.to_string().replace("\"@@\"", literal));
            },
            &["quantization"],
        );
    }
}

/// Overwrites element `index` of a tensor with `value`'s little-endian bytes.
fn poke(f: &mut RawFile, tensor: &str, index: usize, value: &[u8]) {
    let at = index * value.len();
    f.bytes_mut(tensor)[at..at + value.len()].copy_from_slice(value);
}

#[test]
fn int8_weight_values() {
    let file = tiny(Precision::Int8);
    reject_edit(
        "an int8 weight of -128",
        &file,
        |f| poke(f, "conv2.weight", 17, &(-128i8).to_le_bytes()),
        &["conv2.weight", "-128"],
    );
    reject_edit(
        "a bias that can overflow the accumulator",
        &file,
        |f| poke(f, "fc1.bias", 0, &i32::MAX.to_le_bytes()),
        &["fc1", "overflow"],
    );
    // An int8 trunk with one fp16 layer.
    let len = file.range("conv2.weight").len();
    reject_edit(
        "mixed int8 / fp16 trunk",
        &file,
        |f| {
            f.replace_tensor("conv2.weight", "F16", vec![16, 8, 3], vec![0; 2 * len]);
            f.replace_tensor("conv2.bias", "F32", vec![16], vec![0; 64]);
        },
        &["int8"],
    );
}

#[test]
fn non_finite_float_weights() {
    let fp32 = tiny(Precision::Fp32);
    for (what, tensor, value) in [
        ("a NaN weight", "conv1.weight", f32::NAN),
        ("an infinite weight", "fc1.weight", f32::INFINITY),
        ("a -inf bias", "ltv.bias", f32::NEG_INFINITY),
        ("a NaN bias", "conv2.bias", f32::NAN),
    ] {
        reject_edit(
            what,
            &fp32,
            |f| poke(f, tensor, 5.min(f.range(tensor).len() / 4 - 1), &value.to_le_bytes()),
            &[tensor, "not finite"],
        );
    }
    let fp16 = tiny(Precision::Fp16);
    reject_edit(
        "an fp16 NaN weight",
        &fp16,
        |f| poke(f, "conv2.weight", 3, &half::f16::NAN.to_le_bytes()),
        &["conv2.weight", "not finite"],
    );
    reject_edit(
        "an fp16 infinite weight",
        &fp16,
        |f| poke(f, "segment_logits.weight", 0, &half::f16::INFINITY.to_le_bytes()),
        &["segment_logits.weight", "not finite"],
    );
}

// ------------------------------------------------------------------------------------------------
// Paths.

#[test]
fn open_missing_path_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model.ltvx");
    let e = Model::open(&missing).unwrap_err().to_string();
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let e = Model::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
}

#[test]
fn open_damaged_files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = model_bytes(Preset::Tiny, Precision::Int8, 1);
    for (name, content) in
        [("empty.ltvx", Vec::new()), ("zeros.ltvx", vec![0; 8]), ("cut.ltvx", bytes[..bytes.len() / 2].to_vec())]
    {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        match Model::open(&path) {
            Err(Error::Format { origin, .. }) => assert_eq!(origin, path.display().to_string()),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn head_values_may_not_feed_other_nodes() {
    // churn → relu → concat into the segment head's input: scores would need a value no backend makes.
    reject_edit(
        "a head read by another node",
        &tiny(Precision::Fp32),
        |f| {
            f.edit_meta("graph", |g| {
                let nodes = g["nodes"].as_array_mut().unwrap();
                let at = nodes.iter().position(|x| x["name"] == "segment_logits").unwrap();
                nodes.insert(at, json!({"name": "r", "op": "relu", "inputs": ["churn"], "output": "r"}));
                nodes.insert(
                    at + 1,
                    json!({"name": "cat2", "op": "concat", "inputs": ["fc1_relu", "r"], "output": "cat2"}),
                );
                node(g, "segment_logits")["inputs"] = json!(["cat2"]);
            })
        },
        &["churn"],
    );
}

#[test]
fn empty_tensors_cannot_be_consumed() {
    // No static features: the static input is empty and may not be joined.
    reject_edit(
        "concat of an empty static input",
        &tiny(Precision::Fp32),
        |f| f.edit_meta("graph", |g| g["inputs"]["static_features"] = json!(0)),
        &["empty"],
    );
}

#[test]
fn unknown_node_fields_are_refused() {
    reject_edit(
        "a conv with a stride",
        &tiny(Precision::Fp32),
        |f| f.edit_meta("graph", |g| node(g, "conv1")["stride"] = json!(2)),
        &["stride"],
    );
    reject_edit(
        "an unknown graph field",
        &tiny(Precision::Fp32),
        |f| f.edit_meta("graph", |g| g["dilation"] = json!(2)),
        &["dilation"],
    );
}

#[test]
fn quantization_only_where_the_graph_has_parameters() {
    let file = tiny(Precision::Int8);
    let params = file.meta("quantization")["activations"]["conv1"].clone();
    reject_edit(
        "parameters on a ReLU output (an alias)",
        &file,
        |f| f.edit_meta("quantization", |q| q["activations"]["conv1_relu"] = params),
        &["conv1_relu"],
    );
    reject_edit(
        "parameters for a layer that does not exist",
        &file,
        |f| {
            f.edit_meta("quantization", |q| {
                q["layers"]["ghost"] = json!({"acc_scale": [1.0], "multiplier": [1073741824], "shift": [31]})
            })
        },
        &["ghost"],
    );
    reject_edit(
        "an unknown quantization field",
        &file,
        |f| f.edit_meta("quantization", |q| q["activations"]["seq"]["offset"] = json!(3)),
        &["offset"],
    );
}

// ------------------------------------------------------------------------------------------------
// Sparse-stored layers (format version 2).

/// A tiny int8 model pruned to 75 % in 4×4 blocks: its trunk layers are stored as blocks.
fn sparse_tiny() -> RawFile {
    use ltvx::model::init::synthetic_ranges;
    use ltvx::model::prune::{Pattern, prune};
    use ltvx::model::quantize::{Int8Options, to_int8};
    let mut float = model_file(Preset::Tiny, Precision::Fp32, 1);
    prune(&mut float, Pattern::Block { rows: 4, cols: 4 }, 0.75).unwrap();
    let ranges = synthetic_ranges(&float, 64, 1).unwrap();
    let file = RawFile::parse(&to_int8(&float, &ranges, &Int8Options::default()).unwrap().to_bytes().unwrap());
    accepts(&file);
    assert!(file.tensor_names().contains(&"conv2.weight.blocks".to_string()), "{:?}", file.tensor_names());
    file
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u16_bytes(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn sparse_block_index_that_lies_is_rejected() {
    let file = sparse_tiny();
    // conv2: [16, 8·3 = 24] in 4×4 blocks → a 4 × 6 grid; block_rows has 5 entries.
    let starts: Vec<i32> = file
        .tensors()
        .iter()
        .find(|t| t.name == "conv2.weight.block_rows")
        .unwrap()
        .bytes
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let kept = *starts.last().unwrap();
    let set_starts = |f: &mut RawFile, v: Vec<i32>| {
        let n = v.len();
        f.replace_tensor("conv2.weight.block_rows", "I32", vec![n], i32_bytes(&v))
    };
    let mut shifted = starts.clone();
    shifted[0] = 1;
    reject_edit("block_rows not from 0", &file, |f| set_starts(f, shifted), &["conv2.weight", "block_rows"]);
    let mut falling = starts.clone();
    falling[2] = starts[1] - 1;
    reject_edit("falling block_rows", &file, |f| set_starts(f, falling), &["block_rows"]);
    let mut wrong_total = starts.clone();
    *wrong_total.last_mut().unwrap() = kept - 1;
    reject_edit("block_rows total", &file, |f| set_starts(f, wrong_total), &["block_rows"]);
    reject_edit("block_rows length", &file, |f| set_starts(f, starts[..4].to_vec()), &["block_rows", "block rows"]);
    let n = kept as usize;
    reject_edit(
        "block column out of the grid",
        &file,
        |f| f.replace_tensor("conv2.weight.block_cols", "U16", vec![n], u16_bytes(&vec![6; n])),
        &["block column 6"],
    );
    reject_edit(
        "a u8 block column out of the grid",
        &file,
        |f| f.replace_tensor("conv2.weight.block_cols", "U8", vec![n], vec![7; n]),
        &["block column 7"],
    );
    reject_edit(
        "block columns repeated",
        &file,
        |f| f.replace_tensor("conv2.weight.block_cols", "U16", vec![n], u16_bytes(&vec![0; n])),
        &["ascending"],
    );
    reject_edit(
        "block columns of the wrong dtype",
        &file,
        |f| f.replace_tensor("conv2.weight.block_cols", "I32", vec![n], i32_bytes(&vec![0; n])),
        &["block_cols", "U8 or U16"],
    );
    reject_edit(
        "blocks of the wrong shape",
        &file,
        |f| f.replace_tensor("conv2.weight.blocks", "I8", vec![n, 2, 8], vec![1; n * 16]),
        &["conv2.weight.blocks", "shape"],
    );
    reject_edit(
        "blocks of a bias dtype",
        &file,
        |f| f.replace_tensor("conv2.weight.blocks", "I32", vec![n, 4, 4], vec![0; n * 64]),
        &["conv2.weight.blocks", "dtype"],
    );
    reject_edit(
        "blocks holding -128",
        &file,
        |f| f.replace_tensor("conv2.weight.blocks", "I8", vec![n, 4, 4], vec![0x80; n * 16]),
        &["-128"],
    );
    reject_edit(
        "one of the three tensors missing",
        &file,
        |f| f.edit_tensors(|ts| ts.retain(|t| t.name != "conv2.weight.block_cols")),
        &["conv2.weight", "lacks"],
    );
    reject_edit(
        "sparse and dense weight both",
        &file,
        |f| {
            f.edit_tensors(|ts| {
                let dense = RawTensor {
                    name: "conv2.weight".into(),
                    dtype: "I8".into(),
                    shape: vec![16, 8, 3],
                    bytes: vec![0; 384],
                };
                ts.push(dense);
            })
        },
        &["conv2.weight", "both"],
    );
}

#[test]
fn sparse_metadata_that_lies_is_rejected() {
    let file = sparse_tiny();
    reject_edit(
        "sparse tensors in a version 1 file",
        &file,
        |f| f.set_meta("format", &json!({"name": "ltvx", "version": 1})),
        &["version 1"],
    );
    reject_edit("no sparsity entry", &file, |f| f.remove_meta("sparsity"), &["stored sparse", "pattern"]);
    reject_edit(
        "recorded sparsity that is not the weights'",
        &file,
        |f| f.edit_meta("sparsity", |s| s["conv2"]["sparsity"] = json!(0.5)),
        &["conv2", "recorded sparsity 0.5"],
    );
    reject_edit(
        "a pattern whose blocks do not tile the layer",
        &file,
        |f| f.edit_meta("sparsity", |s| s["conv2"]["pattern"] = json!("block:3x4")),
        &["conv2", "block:3x4"],
    );
    reject_edit(
        "an unknown pattern",
        &file,
        |f| f.edit_meta("sparsity", |s| s["conv2"]["pattern"] = json!("block:4x4x4")),
        &["sparsity", "pattern"],
    );
    reject_edit(
        "a pattern for a layer the graph lacks",
        &file,
        |f| f.edit_meta("sparsity", |s| s["conv9"] = json!({"pattern": "unstructured", "sparsity": 0.0})),
        &["conv9"],
    );
    reject_edit(
        "2:4 claimed for a layer that breaks it",
        &file,
        |f| f.edit_meta("sparsity", |s| s["fc1"] = json!({"pattern": "2:4", "sparsity": 0.5})),
        &["fc1"],
    );
    reject_edit(
        "an unknown field in a layer's entry",
        &file,
        |f| f.edit_meta("sparsity", |s| s["conv2"]["skip"] = json!(true)),
        &["sparsity", "skip"],
    );
}
