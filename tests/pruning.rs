//! Pruning: exact sparsity per layer, patterns respected, heads untouched, channel pruning that
//! shrinks the graph without changing what the kept channels compute, zeros kept through
//! fine-tuning, the refusals, and every pruned and compressed format through the file.

mod common;

use ltvx::data::synthetic;
use ltvx::engine::HeadValues;
use ltvx::model::graph::{Graph, Heads, InputSizes, Node, Op, Padding, SEQ, STATIC};
use ltvx::model::init::{random_model, synthetic_ranges};
use ltvx::model::prune::{Pattern, prune};
use ltvx::model::quantize::{Int8Options, to_fp16, to_int8};
use ltvx::model::tensor::{Tensor, TensorData};
use ltvx::model::{ModelFile, Precision, Preset};
use ltvx::train::fine_tune::{PruneSchedule, prune_and_fine_tune};
use ltvx::train::{Targets, TrainData, TrainOptions, predict};
use ltvx::{Error, Model};

fn float(preset: Preset, seed: u64) -> ModelFile {
    random_model(preset.graph(preset.default_inputs()), Precision::Fp32, seed, 0.0).unwrap()
}

fn weights(file: &ModelFile, layer: &str) -> Vec<f32> {
    file.weights[&format!("{layer}.weight")].to_f32()
}

/// (name, out channels, reduction length, head) of every weighted layer.
fn layers(file: &ModelFile) -> Vec<(String, usize, usize, bool)> {
    let g = &file.meta.graph;
    g.layers(&g.check().unwrap())
        .into_iter()
        .map(|l| {
            let n: usize = l.weight_shape.iter().product();
            (l.name, l.out_channels, n / l.out_channels, l.head.is_some())
        })
        .collect()
}

/// Zero blocks of a `[out, reduction]` matrix, and whether every zero lies in a whole zero block.
fn zero_blocks(w: &[f32], reduction: usize, rows: usize, cols: usize) -> (usize, bool) {
    let out = w.len() / reduction;
    let mut zero = 0;
    let mut stray = false;
    for br in 0..out / rows {
        for bc in 0..reduction / cols {
            let values: Vec<f32> =
                (0..rows).flat_map(|r| w[(br * rows + r) * reduction + bc * cols..][..cols].to_vec()).collect();
            if values.iter().all(|&x| x == 0.0) {
                zero += 1;
            } else if values.contains(&0.0) {
                stray = true;
            }
        }
    }
    (zero, !stray)
}

#[test]
fn block_pruning_zeroes_exactly_the_share_of_whole_blocks() {
    for (pattern, rows, cols, sparsity) in
        [(Pattern::Block { rows: 4, cols: 4 }, 4, 4, 0.75), (Pattern::Block { rows: 1, cols: 4 }, 1, 4, 0.6)]
    {
        let mut file = float(Preset::Tiny, 3);
        let before = file.clone();
        let report = prune(&mut file, pattern, sparsity).unwrap();
        for (name, out, reduction, head) in layers(&file) {
            let w = weights(&file, &name);
            if head {
                assert_eq!(w, weights(&before, &name), "{name}: heads are never pruned");
                continue;
            }
            let blocks = out * reduction / (rows * cols);
            let (zero, whole) = zero_blocks(&w, reduction, rows, cols);
            assert_eq!(zero, (sparsity * blocks as f64).round() as usize, "{pattern} {name}: zero blocks");
            assert!(whole, "{pattern} {name}: a zero outside a whole zero block");
            // The blocks kept are the largest by L2 norm: no zeroed block outweighs a kept one.
            let original = weights(&before, &name);
            let norm = |w: &[f32], br: usize, bc: usize| -> f64 {
                (0..rows)
                    .flat_map(|r| &w[(br * rows + r) * reduction + bc * cols..][..cols])
                    .map(|&x| (x as f64).powi(2))
                    .sum()
            };
            let (mut max_zeroed, mut min_kept) = (0f64, f64::INFINITY);
            for br in 0..out / rows {
                for bc in 0..reduction / cols {
                    let n = norm(&original, br, bc);
                    if norm(&w, br, bc) == 0.0 { max_zeroed = max_zeroed.max(n) } else { min_kept = min_kept.min(n) }
                }
            }
            assert!(max_zeroed <= min_kept, "{pattern} {name}: zeroed {max_zeroed} > kept {min_kept}");
        }
        assert!((report.prunable_sparsity() - sparsity).abs() < 0.01, "{}", report.prunable_sparsity());
        assert!(report.model_sparsity() < report.prunable_sparsity(), "heads count in the whole model");
        assert_eq!(file.meta.patterns.len(), 3, "tiny has three prunable layers");
    }
}

#[test]
fn unstructured_pruning_is_exact_per_layer() {
    let mut file = float(Preset::Base, 1);
    prune(&mut file, Pattern::Unstructured, 0.3).unwrap();
    for (name, out, reduction, head) in layers(&file) {
        let zeros = weights(&file, &name).iter().filter(|&&x| x == 0.0).count();
        let expected = if head { 0 } else { (0.3 * (out * reduction) as f64).round() as usize };
        assert_eq!(zeros, expected, "{name}");
    }
}

#[test]
fn two_four_keeps_the_two_largest_of_every_four() {
    let mut file = float(Preset::Tiny, 2);
    let before = file.clone();
    prune(&mut file, Pattern::TwoFour, 0.5).unwrap();
    for (name, _, _, head) in layers(&file).into_iter().filter(|l| !l.3) {
        let _ = head;
        for (g, o) in weights(&file, &name).chunks(4).zip(weights(&before, &name).chunks(4)) {
            assert_eq!(g.iter().filter(|&&x| x == 0.0).count(), 2, "{name}: {g:?}");
            let kept_min =
                g.iter().zip(o).filter(|(x, _)| **x != 0.0).map(|(_, o)| o.abs()).fold(f32::INFINITY, f32::min);
            let zeroed_max = g.iter().zip(o).filter(|(x, _)| **x == 0.0).map(|(_, o)| o.abs()).fold(0.0, f32::max);
            assert!(zeroed_max <= kept_min, "{name}: {o:?} → {g:?}");
        }
    }
}

/// A graph whose reductions (3 and 6) no 2:4 group divides.
fn odd_graph() -> Graph {
    let node = |name: &str, op: Op, inputs: &[&str]| Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        output: name.into(),
    };
    Graph {
        name: "odd".into(),
        inputs: InputSizes { seq_channels: 1, seq_len: 5, static_features: 3 },
        nodes: vec![
            node("conv", Op::Conv1d { out_channels: 3, kernel: 3, padding: Padding::Same }, &[SEQ]),
            node("gap", Op::GlobalAvgPool, &["conv"]),
            node("concat", Op::Concat, &["gap", STATIC]),
            node("fc", Op::Dense { units: 5 }, &["concat"]),
            node("ltv", Op::Dense { units: 3 }, &["fc"]),
            node("c", Op::Dense { units: 1 }, &["fc"]),
            node("churn", Op::Sigmoid, &["c"]),
            node("s", Op::Dense { units: 2 }, &["fc"]),
            node("segment", Op::Softmax, &["s"]),
        ],
        heads: Heads { ltv: "ltv".into(), churn: "churn".into(), segment: "segment".into() },
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let file = float(Preset::Tiny, 0);
    for sparsity in [-0.1, 1.0, 1.5, f64::NAN] {
        let err = prune(&mut file.clone(), Pattern::Unstructured, sparsity).unwrap_err();
        assert!(matches!(&err, Error::Input(m) if m.contains("outside [0, 1)")), "{sparsity}: {err}");
    }
    for text in ["dense", "block:", "block:0x4", "block:4", "block:4x999", "3:4", ""] {
        let err = text.parse::<Pattern>().unwrap_err();
        assert!(err.contains("pattern"), "{text}: {err}");
    }
    assert_eq!("block:4x16".parse::<Pattern>(), Ok(Pattern::Block { rows: 4, cols: 16 }));
    let err = prune(&mut file.clone(), Pattern::TwoFour, 0.75).unwrap_err();
    assert!(err.to_string().contains("0.5"), "{err}");
    let mut odd = random_model(odd_graph(), Precision::Fp32, 0, 0.0).unwrap();
    let err = prune(&mut odd, Pattern::TwoFour, 0.5).unwrap_err();
    assert!(err.to_string().contains("fits no layer"), "{err}");
    let mut int8 = to_int8(&file, &synthetic_ranges(&file, 64, 0).unwrap(), &Int8Options::default()).unwrap();
    let err = prune(&mut int8, Pattern::Unstructured, 0.5).unwrap_err();
    assert!(err.to_string().contains("fp32"), "{err}");
}

/// Heads' logits of `file` for a few synthetic customers.
fn logits(file: &ModelFile) -> Vec<f32> {
    let inputs = synthetic::customers(file.meta.graph.inputs, 7, 5);
    let h = predict(&file.meta.graph, &file.weights, &inputs).unwrap();
    [h.ltv, h.churn, h.segment]
        .into_iter()
        .flat_map(|v| match v {
            HeadValues::Logits(v) => v,
            HeadValues::Accumulators(_) => unreachable!("float heads"),
        })
        .collect()
}

/// Zeroes the first `n` output channels (weights and bias) of a layer.
fn silence(file: &mut ModelFile, layer: &str, n: usize) {
    for suffix in ["weight", "bias"] {
        let t: &mut Tensor = file.weights.get_mut(&format!("{layer}.{suffix}")).unwrap();
        let TensorData::F32(v) = &mut t.data else { panic!("f32") };
        let row = v.len() / t.shape[0];
        v[..n * row].fill(0.0);
    }
}

/// Channels that are exactly zero contribute nothing: removing them (and their readers' inputs)
/// must leave every logit as it was, on random graphs of every shape.
#[test]
fn channel_pruning_shrinks_the_graph_and_keeps_what_the_rest_computes() {
    for seed in 0..24 {
        let mut file = random_model(common::random_graph(seed), Precision::Fp32, seed, 0.0).unwrap();
        let trunk: Vec<(String, usize)> =
            layers(&file).into_iter().filter(|l| !l.3 && l.1 >= 2).map(|l| (l.0, l.1)).collect();
        // What channel pruning at 0.5 removes: half the channels, rounded, one kept.
        let removed = |out: usize| ((out as f64 * 0.5).round() as usize).min(out - 1);
        for (name, out) in &trunk {
            silence(&mut file, name, removed(*out));
        }
        let expected = logits(&file);
        let macs_before = file.meta.graph.total_macs(&file.meta.graph.check().unwrap());
        let mut pruned = file.clone();
        let report = match prune(&mut pruned, Pattern::Channel, 0.5) {
            Ok(r) => r,
            Err(e) => {
                assert!(trunk.is_empty() || e.to_string().contains("fits no layer"), "seed {seed}: {e}");
                continue;
            }
        };
        let shapes = pruned.meta.graph.check().unwrap();
        for l in pruned.meta.graph.layers(&shapes) {
            let was = trunk.iter().find(|(n, _)| *n == l.name);
            let o = report.layers.iter().find(|o| o.layer == l.name).unwrap();
            if let (Some((_, out)), Some(Pattern::Channel)) = (was, o.pattern) {
                assert_eq!(l.out_channels, out - removed(*out), "seed {seed} {}: channels", l.name);
            }
        }
        assert!(pruned.meta.graph.total_macs(&shapes) < macs_before, "seed {seed}: MACs shrink");
        let got = logits(&pruned);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-5 + 1e-4 * e.abs(), "seed {seed}: {got:?} vs {expected:?}");
        }
        pruned.into_model().unwrap();
    }
}

fn tiny_data(sizes: InputSizes, n: usize) -> TrainData {
    let inputs = synthetic::customers(sizes, n, 9);
    let spend: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { 0.0 } else { (i % 17) as f32 * 3.5 }).collect();
    let targets = Targets {
        churned: spend.iter().map(|&s| if s == 0.0 { 1.0 } else { 0.0 }).collect(),
        segment: (0..n).map(|i| (i % 5) as u32).collect(),
        spend,
        soft: None,
    };
    TrainData { inputs, targets }
}

#[test]
fn iterative_pruning_keeps_zeros_through_fine_tuning() {
    let mut file = float(Preset::Tiny, 4);
    let before = file.clone();
    let data = tiny_data(file.meta.graph.inputs, 96);
    let opts = TrainOptions { threads: 1, batch_size: 32, ..TrainOptions::default() };
    let plan = PruneSchedule { pattern: Pattern::Block { rows: 4, cols: 4 }, sparsity: 0.75, steps: 3, epochs: 2 };
    let mut epochs = 0;
    prune_and_fine_tune(&mut file, &plan, Some(&data), &opts, &mut |_, _, _| epochs += 1).unwrap();
    assert_eq!(epochs, 6, "two epochs after each of three steps");
    for (name, out, reduction, head) in layers(&file) {
        let w = weights(&file, &name);
        assert_ne!(w, weights(&before, &name), "{name}: fine-tuning trained it");
        if head {
            continue;
        }
        let (zero, whole) = zero_blocks(&w, reduction, 4, 4);
        assert_eq!(zero, (0.75 * (out * reduction / 16) as f64).round() as usize, "{name}");
        assert!(whole, "{name}: fine-tuning moved a pruned weight");
    }
    let no_data = prune_and_fine_tune(&mut float(Preset::Tiny, 4), &plan, None, &opts, &mut |_, _, _| {});
    assert!(no_data.unwrap_err().to_string().contains("--transactions"));
    let no_tuning = PruneSchedule { epochs: 0, ..plan };
    let err = prune_and_fine_tune(&mut float(Preset::Tiny, 4), &no_tuning, None, &opts, &mut |_, _, _| {});
    assert!(err.unwrap_err().to_string().contains("--fine-tune-epochs"));
}

/// The compressed variants of one pruned float model.
fn variants(float: &ModelFile) -> Vec<(&'static str, ModelFile)> {
    let ranges = synthetic_ranges(float, 128, 1).unwrap();
    let int8 = |f32_heads| to_int8(float, &ranges, &Int8Options { f32_heads, calibration: "test".into() }).unwrap();
    vec![("fp32", float.clone()), ("fp16", to_fp16(float)), ("int8", int8(false)), ("int8, f32 heads", int8(true))]
}

/// Every format through the file: the opened model's dense weights are the written ones, the
/// pruned layers are stored as blocks, and writing the opened model again gives the same bytes.
#[test]
fn every_compressed_format_round_trips_through_the_file() {
    let dense = float(Preset::Base, 6);
    let mut block = dense.clone();
    prune(&mut block, Pattern::Block { rows: 4, cols: 16 }, 0.75).unwrap();
    let mut unstructured = dense.clone();
    prune(&mut unstructured, Pattern::Unstructured, 0.9).unwrap();
    let mut two_four = dense.clone();
    prune(&mut two_four, Pattern::TwoFour, 0.5).unwrap();
    // Channel pruning of a block-pruned model: the old patterns no longer describe the layers.
    let mut channel = block.clone();
    prune(&mut channel, Pattern::Channel, 0.5).unwrap();
    assert!(channel.meta.patterns.is_empty());
    for (what, float) in [
        ("dense", &dense),
        ("block", &block),
        ("unstructured", &unstructured),
        ("2:4", &two_four),
        ("channel", &channel),
    ] {
        for (precision, file) in variants(float) {
            let what = format!("{what} {precision}");
            let bytes = file.to_bytes().unwrap();
            let model = Model::from_bytes("round-trip", bytes.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
            for (name, t) in &file.weights {
                let got = match &t.data {
                    TensorData::F32(_) => TensorData::F32(model.f32s(name).into_owned()),
                    TensorData::F16(_) => TensorData::F16(model.f16s(name).into_owned()),
                    TensorData::I8(_) => TensorData::I8(model.i8s(name).into_owned()),
                    TensorData::I32(_) => TensorData::I32(model.i32s(name).into_owned()),
                    TensorData::U16(_) | TensorData::U8(_) => panic!("{what}: no u16 or u8 weights"),
                };
                assert!(got == t.data, "{what}: {name} differs after the round trip");
            }
            let raw: Vec<String> =
                safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect();
            for l in &model.layers {
                let stored_blocks = raw.contains(&format!("{}.weight.blocks", l.name));
                let s = model.layer_sparsity(&l.name);
                assert_eq!(s.is_some(), file.meta.patterns.contains_key(&l.name), "{what} {}", l.name);
                assert_eq!(s.is_some_and(|s| s.stored_sparse), stored_blocks, "{what} {}", l.name);
            }
            if what.starts_with("block") || what.starts_with("unstructured") {
                assert!(raw.iter().any(|n| n.ends_with(".blocks")), "{what}: sparse layers stored as blocks");
                assert!(model.tensor_bytes() < dense_bytes(&file), "{what}: smaller than dense");
                assert_eq!(model.format_version(), 2, "{what}");
            } else if file.meta.patterns.is_empty() {
                assert!(raw.iter().all(|n| !n.ends_with(".blocks")), "{what}: nothing to store sparse");
                assert_eq!(model.format_version(), 1, "{what}: dense files stay readable by older ltvx");
            }
            assert!(model.to_model_file().to_bytes().unwrap() == bytes, "{what}: writing again gives the same bytes");
        }
    }
}

fn dense_bytes(file: &ModelFile) -> usize {
    file.weights
        .values()
        .map(|t| {
            t.len()
                * if matches!(t.data, TensorData::I8(_)) {
                    1
                } else if matches!(t.data, TensorData::F16(_)) {
                    2
                } else {
                    4
                }
        })
        .sum()
}

/// Issue 4's storage target: a 75 % block-sparse int8 file's tensors are at most 40 % of the
/// dense int8 file's.
#[test]
fn block_sparse_int8_tensors_are_at_most_40_percent_of_dense_int8() {
    let dense = float(Preset::Base, 8);
    let mut pruned = dense.clone();
    prune(&mut pruned, Pattern::Block { rows: 4, cols: 16 }, 0.75).unwrap();
    let int8 = |f: &ModelFile| {
        let ranges = synthetic_ranges(f, 128, 1).unwrap();
        to_int8(f, &ranges, &Int8Options::default()).unwrap().into_model().unwrap().tensor_bytes()
    };
    let (d, p) = (int8(&dense), int8(&pruned));
    assert!(p * 10 <= d * 4, "{p} bytes sparse vs {d} dense: {:.1} %", 100.0 * p as f64 / d as f64);
}
