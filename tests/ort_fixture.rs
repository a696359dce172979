//! An external check of the graph's semantics: "value model v1" with the peer benchmark's seeded
//! weights, run by the fp32 reference, must match ONNX Runtime's outputs on the same 64 customers
//! (tests/fixtures/value_model_v1_ort.safetensors, made by tests/fixtures/make_ort_fixture.py).

use ltvx::engine::{Batch, Engine};
use ltvx::model::tensor::{Tensor, Weights};
use ltvx::model::{ModelFile, ModelMeta, Preset};
use safetensors::SafeTensors;
use serde_json::json;

/// The fixture's layer names → the base preset's.
const LAYERS: [(&str, &str); 8] = [
    ("conv1", "conv1"),
    ("conv2", "conv2"),
    ("conv3", "conv3"),
    ("fc1", "fc1"),
    ("fc2", "fc2"),
    ("ltv", "ltv"),
    ("churn", "churn_logit"),
    ("seg", "segment_logits"),
];

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 + 1e-4 * b.abs()
}

#[test]
fn fp32_reference_matches_onnx_runtime() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/value_model_v1_ort.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| -> (Vec<usize>, Vec<f32>) {
        let t = st.tensor(name).unwrap();
        (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
    };
    let base = Preset::Base;
    let graph = base.graph(base.default_inputs());
    let mut weights = Weights::new();
    for (theirs, ours) in LAYERS {
        let (ws, w) = get(&format!("{theirs}.w"));
        let (bs, b) = get(&format!("{theirs}.b"));
        weights.insert(format!("{ours}.weight"), Tensor::f32(ws, w));
        weights.insert(format!("{ours}.bias"), Tensor::f32(bs, b));
    }
    let meta = ModelMeta {
        graph,
        quantization: None,
        feature_spec: json!({}),
        provenance: json!({}),
        metrics: json!({}),
        patterns: Default::default(),
    };
    let model = ModelFile { meta, weights }.into_model().unwrap();
    let (_, seq) = get("input.seq");
    let (_, stat) = get("input.static");
    let batch = Batch::from_vecs(base.default_inputs(), seq, stat).unwrap();
    assert_eq!(batch.len(), 64);

    let engine = Engine::build(&model, "reference".parse().unwrap()).unwrap();
    let trace = engine.trace(&batch).unwrap();
    let ltvx::engine::HeadValues::Logits(ltv) = &trace.heads.ltv else { panic!("float heads") };
    let scores = engine.score(&batch).unwrap();
    let (_, ort_ltv) = get("ort.ltv");
    let (_, ort_churn) = get("ort.churn");
    let (_, ort_segment) = get("ort.segment");
    for (i, (a, b)) in ltv.iter().zip(&ort_ltv).enumerate() {
        assert!(close(*a, *b), "ltv output {i}: ltvx {a} vs ONNX Runtime {b}");
    }
    for (i, (a, b)) in scores.churn_probability.iter().zip(&ort_churn).enumerate() {
        assert!(close(*a, *b), "churn {i}: ltvx {a} vs ONNX Runtime {b}");
    }
    for (i, (a, b)) in scores.p_segment.iter().zip(&ort_segment).enumerate() {
        assert!(close(*a, *b), "segment probability {i}: ltvx {a} vs ONNX Runtime {b}");
    }
}
