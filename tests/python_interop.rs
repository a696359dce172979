//! `.ltvx` files are plain safetensors to the Python `safetensors` package: it reads every tensor and
//! the `__metadata__` entries, and files it writes (with the original metadata) open in ltvx — or
//! are rejected, naming the tensor, when their tensors do not fit the graph.
//!
//! Needs a Python with `safetensors` and `numpy`:
//!
//!     python3 -m venv /tmp/pyenv-ltvx
//!     /tmp/pyenv-ltvx/bin/pip install safetensors==0.7.0 numpy==2.4.6
//!     LTVX_PYTHON=/tmp/pyenv-ltvx/bin/python cargo test --test python_interop
//!
//! `LTVX_PYTHON` names the interpreter (default `python3`). Without the packages the tests print
//! why and pass, unless `LTVX_REQUIRE` contains `python` (set it in CI), in which case they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use ltvx::model::init::{InitOptions, init};
use ltvx::model::quant::Quantization;
use ltvx::model::{Model, Precision, Preset};
use safetensors::Dtype;
use serde::Deserialize;
use serde_json::Value;

const INSTALL: &str = "pip install safetensors numpy";

/// The interpreter to use, or `None` (after saying why) when the tests should be skipped.
fn python() -> Option<String> {
    let python = std::env::var("LTVX_PYTHON").unwrap_or_else(|_| "python3".into());
    let works = Command::new(&python)
        .args(["-c", "import safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works {
        return Some(python);
    }
    let required = std::env::var("LTVX_REQUIRE").is_ok_and(|v| v.contains("python"));
    assert!(!required, "LTVX_REQUIRE has python, but {python} cannot import safetensors and numpy ({INSTALL})");
    println!("skipped: {python} with safetensors+numpy not found ({INSTALL})");
    None
}

/// Runs a Python snippet with arguments; returns its stdout.
fn run_python(python: &str, script: &str, args: &[&Path]) -> String {
    let out = Command::new(python).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "python failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 from python")
}

const PRESETS: [Preset; 2] = [Preset::Tiny, Preset::Base];
const PRECISIONS: [Precision; 3] = [Precision::Fp32, Precision::Fp16, Precision::Int8];

/// Writes an initialised model of every small preset and precision into `dir`.
fn write_models(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut models = Vec::new();
    for preset in PRESETS {
        for precision in PRECISIONS {
            let path = dir.join(format!("{preset}-{precision}.ltvx"));
            init(&InitOptions { preset, precision, seed: 4, sparsity: 0.0, inputs: None, block: None })
                .and_then(|m| m.save(&path))
                .unwrap_or_else(|e| panic!("{preset} {precision}: {e}"));
            models.push((format!("{preset} {precision}"), path));
        }
    }
    models
}

// ------------------------------------------------------------------------------------------------
// What Python sees.

/// For each file argument: its metadata and, per tensor, dtype, shape, sum and raw bytes.
const READ_SCRIPT: &str = r#"
import json, sys
import numpy as np
from safetensors import safe_open

out = {}
for path in sys.argv[1:]:
    with safe_open(path, framework="np") as f:
        tensors = {}
        for name in f.keys():
            t = f.get_tensor(name)
            integer = np.issubdtype(t.dtype, np.integer)
            tensors[name] = {
                "dtype": str(t.dtype),
                "shape": list(t.shape),
                "sum": str(int(t.astype(np.int64).sum()) if integer else float(t.astype(np.float64).sum())),
                "hex": t.tobytes().hex(),
            }
        out[path] = {"metadata": f.metadata(), "tensors": tensors}
print(json.dumps(out))
"#;

#[derive(Deserialize)]
struct PyFile {
    metadata: BTreeMap<String, String>,
    tensors: BTreeMap<String, PyTensor>,
}

#[derive(Deserialize)]
struct PyTensor {
    dtype: String,
    shape: Vec<usize>,
    /// As text, so that Rust's exact parser reads it.
    sum: String,
    hex: String,
}

fn read_with_python(python: &str, paths: &[&Path]) -> BTreeMap<String, PyFile> {
    serde_json::from_str(&run_python(python, READ_SCRIPT, paths)).expect("JSON from the read script")
}

fn numpy_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "float32",
        Dtype::F16 => "float16",
        Dtype::I8 => "int8",
        Dtype::I32 => "int32",
        d => panic!("unexpected dtype {d:?}"),
    }
}

/// A tensor as Rust reads it: its raw bytes and its values (exact in f64 for every dtype here).
fn rust_tensor(model: &Model, name: &str) -> (Vec<u8>, Vec<f64>) {
    fn widen<T: Copy + bytemuck::Pod>(v: &[T], f: impl Fn(T) -> f64) -> (Vec<u8>, Vec<f64>) {
        (bytemuck::cast_slice(v).to_vec(), v.iter().map(|&x| f(x)).collect())
    }
    match model.tensor(name).unwrap().dtype {
        Dtype::F32 => widen(&model.f32s(name), f64::from),
        Dtype::F16 => widen(&model.f16s(name), f64::from),
        Dtype::I8 => widen(&model.i8s(name), f64::from),
        Dtype::I32 => widen(&model.i32s(name), f64::from),
        d => panic!("{name}: unexpected dtype {d:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every tensor Python reads equals what Rust reads: names, dtypes, shapes, values.
fn assert_python_sees_model(what: &str, model: &Model, py: &PyFile) {
    let names: BTreeSet<&String> = py.tensors.keys().collect();
    let expected: BTreeSet<String> =
        model.layers.iter().flat_map(|l| [format!("{}.weight", l.name), format!("{}.bias", l.name)]).collect();
    assert_eq!(names, expected.iter().collect(), "{what}: tensor names");
    for (name, t) in &py.tensors {
        let entry = model.tensor(name).unwrap();
        assert_eq!(t.dtype, numpy_dtype(entry.dtype), "{what}: {name} dtype");
        assert_eq!(t.shape, entry.shape, "{what}: {name} shape");
        let (bytes, values) = rust_tensor(model, name);
        let sum: f64 = values.iter().sum();
        let py_sum: f64 = t.sum.parse().unwrap_or_else(|e| panic!("{what}: {name} sum {:?}: {e}", t.sum));
        if matches!(entry.dtype, Dtype::I8 | Dtype::I32) {
            assert_eq!(py_sum, sum, "{what}: {name} sum");
        } else {
            // numpy sums pairwise, Rust in order: equal up to f64 rounding.
            let magnitude: f64 = values.iter().map(|x| x.abs()).sum();
            assert!((py_sum - sum).abs() <= 1e-12 * magnitude, "{what}: {name} sum {py_sum} vs {sum}");
        }
        assert!(t.hex == hex(&bytes), "{what}: {name} bytes differ");
    }
}

/// Every init model written to a temporary folder (kept alive by the returned guard), and what
/// Python read from each; `None` when Python with safetensors is not available.
#[allow(clippy::type_complexity)]
fn models_seen_by_python() -> Option<(tempfile::TempDir, Vec<(String, PathBuf)>, BTreeMap<String, PyFile>)> {
    let python = python()?;
    let dir = tempfile::tempdir().unwrap();
    let models = write_models(dir.path());
    let paths: Vec<&Path> = models.iter().map(|(_, p)| p.as_path()).collect();
    let seen = read_with_python(&python, &paths);
    Some((dir, models, seen))
}

#[test]
fn python_reads_every_tensor() {
    let Some((_dir, models, seen)) = models_seen_by_python() else { return };
    for (what, path) in &models {
        let model = Model::open(path).unwrap();
        assert_python_sees_model(what, &model, &seen[path.to_str().unwrap()]);
    }
}

#[test]
fn python_sees_the_metadata() {
    let Some((_dir, models, seen)) = models_seen_by_python() else { return };
    for (what, path) in &models {
        let model = Model::open(path).unwrap();
        let meta = &seen[path.to_str().unwrap()].metadata;
        let doc = |key: &str| -> Value {
            serde_json::from_str(meta.get(key).unwrap_or_else(|| panic!("{what}: no {key} entry")))
                .unwrap_or_else(|e| panic!("{what}: {key} is not JSON: {e}"))
        };
        assert_eq!(doc("format"), serde_json::json!({"name": "ltvx", "version": 1}), "{what}");
        assert_eq!(doc("graph"), serde_json::to_value(model.graph()).unwrap(), "{what}");
        assert_eq!(doc("provenance"), model.meta.provenance, "{what}");
        assert_eq!(doc("feature_spec"), model.meta.feature_spec, "{what}");
        assert_eq!(doc("metrics"), model.meta.metrics, "{what}");
        let int8 = model.precision() == Precision::Int8;
        assert_eq!(meta.contains_key("quantization"), int8, "{what}: quantization entry");
        if int8 {
            let q: Quantization = serde_json::from_str(&meta["quantization"]).expect("quantization parses");
            assert_eq!(Some(&q), model.quantization(), "{what}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// What Python writes.

/// Reads a model and writes three copies with the original metadata: unchanged, with an extra
/// tensor, and without `fc1.bias`.
const WRITE_SCRIPT: &str = r#"
import sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

src, same, extra, missing = sys.argv[1:5]
with safe_open(src, framework="np") as f:
    metadata = f.metadata()
    tensors = {name: f.get_tensor(name) for name in f.keys()}
save_file(tensors, same, metadata=metadata)
save_file({**tensors, "extra.weight": np.zeros((2, 3), dtype=np.float32)}, extra, metadata=metadata)
save_file({k: v for k, v in tensors.items() if k != "fc1.bias"}, missing, metadata=metadata)
"#;

#[test]
fn python_written_files() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (what, path) in write_models(dir.path()) {
        let copy = |name: &str| dir.path().join(format!("{}-{name}.safetensors", what.replace(' ', "-")));
        let (same, extra, missing) = (copy("same"), copy("extra"), copy("missing"));
        run_python(&python, WRITE_SCRIPT, &[&path, &same, &extra, &missing]);

        let original = Model::open(&path).unwrap();
        let resaved = Model::open(&same).unwrap_or_else(|e| panic!("{what}: Python's unchanged copy: {e}"));
        assert_eq!(resaved.meta, original.meta, "{what}");
        for l in &original.layers {
            for name in [format!("{}.weight", l.name), format!("{}.bias", l.name)] {
                assert_eq!(rust_tensor(&resaved, &name).0, rust_tensor(&original, &name).0, "{what}: {name}");
                assert_eq!(resaved.tensor(&name).unwrap().shape, original.tensor(&name).unwrap().shape);
            }
        }

        for (file, needles) in
            [(&extra, ["unexpected tensor", "extra.weight"]), (&missing, ["missing tensor", "fc1.bias"])]
        {
            let e = Model::open(file).expect_err(&format!("{what}: {} must be rejected", file.display())).to_string();
            for n in needles {
                assert!(e.contains(n), "{what}: {e:?} does not mention {n:?}");
            }
            assert!(e.contains(&file.display().to_string()), "{what}: {e:?} names the file");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Block-sparse files (format version 2).

/// Rebuilds each sparse-stored weight from its three tensors as docs/FORMAT.md describes them, given
/// the dense `[out, reduction]` shapes (a JSON argument), and prints the dense bytes as hex.
const SPARSE_SCRIPT: &str = r#"
import json, sys
import numpy as np
from safetensors import safe_open

path, shapes = sys.argv[1], json.loads(sys.argv[2])
out = {}
with safe_open(path, framework="np") as f:
    sparsity = json.loads(f.metadata()["sparsity"])
    for name, (rows_out, reduction) in shapes.items():
        blocks = f.get_tensor(name + ".blocks")
        starts = f.get_tensor(name + ".block_rows")
        cols = f.get_tensor(name + ".block_cols")
        assert cols.dtype in (np.uint8, np.uint16) and starts.dtype == np.int32
        r, c = blocks.shape[1], blocks.shape[2]
        dense = np.zeros((rows_out, reduction), dtype=blocks.dtype)
        for br in range(len(starts) - 1):
            for k in range(starts[br], starts[br + 1]):
                col = int(cols[k])  # widen first: u8 arithmetic would wrap
                dense[br * r:(br + 1) * r, col * c:(col + 1) * c] = blocks[k]
        out[name] = {"hex": dense.tobytes().hex(), "pattern": sparsity[name[:-len(".weight")]]["pattern"]}
print(json.dumps(out))
"#;

#[test]
fn python_rebuilds_block_sparse_weights() {
    use ltvx::model::init::synthetic_ranges;
    use ltvx::model::prune::{Pattern, prune};
    use ltvx::model::quantize::{Int8Options, to_fp16, to_int8};
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let float = |preset: Preset, pattern: Pattern, sparsity: f64| {
        let mut f = init(&InitOptions {
            preset,
            precision: Precision::Fp32,
            seed: 4,
            sparsity: 0.0,
            inputs: None,
            block: None,
        })
        .unwrap();
        prune(&mut f, pattern, sparsity).unwrap();
        f
    };
    let tiny = float(Preset::Tiny, Pattern::Block { rows: 4, cols: 4 }, 0.75);
    let int8 = to_int8(&tiny, &synthetic_ranges(&tiny, 64, 1).unwrap(), &Int8Options::default()).unwrap();
    let cases = [
        ("tiny int8 block:4x4", int8),
        ("base fp32 block:4x16", float(Preset::Base, Pattern::Block { rows: 4, cols: 16 }, 0.75)),
        ("base fp16 unstructured", to_fp16(&float(Preset::Base, Pattern::Unstructured, 0.9))),
    ];
    for (what, file) in cases {
        let path = dir.path().join(format!("{}.ltvx", what.replace([' ', ':'], "-")));
        let model = file.save(&path).unwrap();
        let sparse: Vec<_> =
            model.layers.iter().filter(|l| model.layer_sparsity(&l.name).is_some_and(|s| s.stored_sparse)).collect();
        assert!(!sparse.is_empty(), "{what}: layers stored sparse");
        let shapes: BTreeMap<String, [usize; 2]> = sparse
            .iter()
            .map(|l| {
                let n: usize = l.weight_shape.iter().product();
                (format!("{}.weight", l.name), [l.out_channels, n / l.out_channels])
            })
            .collect();
        let arg = serde_json::to_string(&shapes).unwrap();
        let out = Command::new(&python).arg("-c").arg(SPARSE_SCRIPT).arg(&path).arg(&arg).output().unwrap();
        assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let rebuilt: BTreeMap<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
        for (name, v) in &rebuilt {
            assert!(v["hex"].as_str() == Some(&hex(&rust_tensor(&model, name).0)), "{what}: {name} differs in Python");
            let layer = name.trim_end_matches(".weight");
            assert_eq!(v["pattern"], model.layer_sparsity(layer).unwrap().pattern.to_string(), "{what}: {name}");
        }
        // Python's own copy of the file (its writer, the same tensors and metadata) opens in ltvx.
        let same = dir.path().join("same.safetensors");
        let missing = dir.path().join("missing.safetensors");
        run_python(&python, WRITE_SCRIPT, &[&path, &same, &dir.path().join("extra.safetensors"), &missing]);
        let resaved = Model::open(&same).unwrap_or_else(|e| panic!("{what}: Python's copy: {e}"));
        assert_eq!(resaved.meta, model.meta, "{what}");
        for l in &model.layers {
            let name = format!("{}.weight", l.name);
            assert_eq!(rust_tensor(&resaved, &name).0, rust_tensor(&model, &name).0, "{what}: {name}");
        }
    }
}
