//! The reference backend: the correctness oracle. Plain loops, one customer at a time, no SIMD, no
//! threads, every op executed exactly as docs/NUMERICS.md states it. Every other backend is tested
//! against this file, so clarity wins over speed here.

use std::collections::{BTreeMap, HashMap};

use super::{Backend, BackendKind, Device, Plan, Probe, Trace};
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::Result;
use crate::model::graph::{Graph, HeadKind, Op, Padding, SEQ, STATIC, Shapes};
use crate::model::quant::{ActQuant, LayerQuant, Requant};
use crate::model::{Model, Precision};

pub struct Reference;

impl Backend for Reference {
    fn kind(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn probe(&self) -> Probe {
        let device = Device {
            index: 0,
            name: "host CPU".into(),
            detail: "plain loops, one thread (the correctness oracle)".into(),
        };
        Probe { backend: BackendKind::Reference, usable: true, reason: None, devices: vec![device], selected: None }
    }

    fn supports(&self, _model: &Model) -> std::result::Result<(), String> {
        Ok(())
    }

    fn build(&self, model: &Model) -> Result<Box<dyn Plan>> {
        Ok(Box::new(ReferencePlan::new(model)))
    }
}

/// A layer's parameters, unpacked from the file.
enum Params {
    /// fp32, or fp16 widened to f32 (f16 weights, f32 arithmetic).
    Float {
        w: Vec<f32>,
        b: Vec<f32>,
    },
    Int8 {
        w: Vec<i8>,
        b: Vec<i32>,
    },
}

/// What the int8 path needs at each node, resolved once when the plan is built.
#[derive(Default)]
struct Int8Node {
    /// The input's parameters per channel (rows of `[C, T]`, elements of a vector).
    input: Vec<ActQuant>,
    /// The output's zero point; `None` for head layers, whose accumulators end the pipeline.
    z_out: Option<u8>,
    /// Per output channel (one for a GlobalAvgPool).
    requant: Vec<Requant>,
}

impl Int8Node {
    fn zeros_in(&self) -> Vec<u8> {
        self.input.iter().map(|q| q.zero_point).collect()
    }
}

struct Int8State {
    seq: ActQuant,
    stat: ActQuant,
    /// By node index.
    nodes: Vec<Int8Node>,
}

pub struct ReferencePlan {
    graph: Graph,
    shapes: Shapes,
    params: HashMap<String, Params>,
    /// Present for int8 models.
    int8: Option<Int8State>,
    /// Tensors a fast backend materializes (outputs of fused groups), for the debug trace.
    boundaries: Vec<String>,
    /// The Dense node computing each head's logits.
    head_nodes: [String; 3],
    precision: Precision,
}

/// Tensor values while one customer flows through the graph.
enum Value {
    F32(Vec<f32>),
    U8(Vec<u8>),
    Acc(Vec<i32>),
}

impl ReferencePlan {
    pub fn new(model: &Model) -> Self {
        let graph = model.graph().clone();
        let mut params = HashMap::new();
        for l in &model.layers {
            let (w, b) = (format!("{}.weight", l.name), format!("{}.bias", l.name));
            let p = match model.layer_precision(&l.name) {
                Precision::Int8 => Params::Int8 { w: model.i8s(&w).into_owned(), b: model.i32s(&b).into_owned() },
                _ => Params::Float { w: model.weights_f32(&l.name), b: model.f32s(&b).into_owned() },
            };
            params.insert(l.name.clone(), p);
        }
        // Head layers are groups of their own whose outputs are not u8: they are not boundaries.
        let boundaries = graph
            .fused_groups()
            .into_iter()
            .filter(|g| graph.head_of(&graph.nodes[g.nodes[0]]).is_none())
            .map(|g| g.output)
            .collect();
        let head_nodes = HeadKind::ALL.map(|h| graph.head_dense(h).name.clone());
        let int8 = (model.precision() == Precision::Int8).then(|| int8_state(model));
        ReferencePlan {
            shapes: model.shapes.clone(),
            params,
            int8,
            boundaries,
            head_nodes,
            precision: model.precision(),
            graph,
        }
    }

    /// Runs the float graph for one customer, showing every tensor to `observe` (calibration).
    /// Returns the head logits (ltv, churn, segment). Float models only.
    pub fn forward_f32(&self, seq: &[f32], stat: &[f32], observe: &mut dyn FnMut(&str, &[f32])) -> [Vec<f32>; 3] {
        let mut env: HashMap<&str, Vec<f32>> = HashMap::new();
        observe(SEQ, seq);
        observe(STATIC, stat);
        env.insert(SEQ, seq.to_vec());
        env.insert(STATIC, stat.to_vec());
        for node in &self.graph.nodes {
            let x = &env[node.inputs[0].as_str()];
            let in_shape = &self.shapes[&node.inputs[0]];
            let y = match &node.op {
                Op::Conv1d { out_channels, kernel, padding } => {
                    let Params::Float { w, b } = &self.params[&node.name] else { unreachable!("float plan") };
                    conv1d_f32(x, in_shape, w, b, *out_channels, *kernel, *padding)
                }
                Op::Dense { units } => {
                    let Params::Float { w, b } = &self.params[&node.name] else { unreachable!("float plan") };
                    dense_f32(x, w, b, *units)
                }
                Op::Relu => x.iter().map(|v| v.max(0.0)).collect(),
                // Head activations belong to the shared epilogue.
                Op::Sigmoid | Op::Softmax => continue,
                Op::MaxPool1d => max_pool(x, in_shape, f32::max),
                Op::GlobalAvgPool => {
                    x.chunks(in_shape[1]).map(|c| c.iter().sum::<f32>() / in_shape[1] as f32).collect()
                }
                Op::Concat => node.inputs.iter().flat_map(|i| env[i.as_str()].iter().copied()).collect(),
            };
            observe(&node.output, &y);
            env.insert(&node.output, y);
        }
        self.head_nodes
            .clone()
            .map(|n| env.remove(self.graph.node(&n).expect("head node").output.as_str()).expect("head computed"))
    }

    /// Runs the int8 graph for one customer whose inputs are already quantized on the host.
    fn forward_int8(
        &self,
        seq: Vec<u8>,
        stat: Vec<u8>,
        boundaries: Option<&mut BTreeMap<String, Vec<u8>>>,
    ) -> [Value; 3] {
        let state = self.int8.as_ref().expect("int8 plan");
        let (g, shapes) = (&self.graph, &self.shapes);
        let mut env: HashMap<&str, Value> = HashMap::new();
        env.insert(SEQ, Value::U8(seq));
        env.insert(STATIC, Value::U8(stat));
        for (node, nq) in g.nodes.iter().zip(&state.nodes) {
            let input = &node.inputs[0];
            let in_shape = &shapes[input];
            let requant = |acc: Vec<i32>, per_channel: usize| -> Value {
                let z_out = nq.z_out.expect("requantized layer");
                Value::U8(
                    acc.iter().enumerate().map(|(i, &a)| nq.requant[i / per_channel].apply(a, z_out, false)).collect(),
                )
            };
            let y = match (&node.op, &env[input.as_str()]) {
                (Op::Conv1d { out_channels, kernel, padding }, Value::U8(x)) => {
                    let Params::Int8 { w, b } = &self.params[&node.name] else { unreachable!("int8 trunk") };
                    let z_in = nq.input[0].zero_point;
                    let acc = conv1d_acc(x, in_shape, z_in, w, b, *out_channels, *kernel, *padding);
                    requant(acc, shapes[&node.output][1])
                }
                (Op::Dense { units }, Value::U8(x)) => match (&self.params[&node.name], nq.z_out) {
                    (Params::Int8 { w, b }, None) => Value::Acc(dense_acc(x, &nq.zeros_in(), w, b, *units)),
                    (Params::Int8 { w, b }, Some(_)) => requant(dense_acc(x, &nq.zeros_in(), w, b, *units), 1),
                    // A float head of an int8 model runs on the dequantized input.
                    (Params::Float { w, b }, _) => {
                        let real: Vec<f32> = x.iter().zip(&nq.input).map(|(&q, a)| a.dequantize(q)).collect();
                        Value::F32(dense_f32(&real, w, b, *units))
                    }
                },
                (Op::Relu, Value::U8(x)) => {
                    let per = x.len() / nq.input.len();
                    Value::U8(x.iter().enumerate().map(|(i, &v)| v.max(nq.input[i / per].zero_point)).collect())
                }
                (Op::Sigmoid | Op::Softmax, _) => continue,
                (Op::MaxPool1d, Value::U8(x)) => Value::U8(max_pool(x, in_shape, u8::max)),
                (Op::GlobalAvgPool, Value::U8(x)) => {
                    requant(gap_acc(x, in_shape[1], nq.input[0].zero_point), usize::MAX)
                }
                (Op::Concat, _) => Value::U8(
                    node.inputs
                        .iter()
                        .flat_map(|i| match &env[i.as_str()] {
                            Value::U8(v) => v.clone(),
                            _ => unreachable!("concat of u8 tensors"),
                        })
                        .collect(),
                ),
                (op, _) => unreachable!("{} on a non-u8 tensor in a validated int8 graph", op.kind()),
            };
            env.insert(&node.output, y);
        }
        if let Some(out) = boundaries {
            for t in &self.boundaries {
                if let Some(Value::U8(v)) = env.get(t.as_str()) {
                    out.entry(t.clone()).or_default().extend_from_slice(v);
                }
            }
        }
        self.head_nodes
            .clone()
            .map(|n| env.remove(g.node(&n).expect("head node").output.as_str()).expect("head computed"))
    }

    fn run_rows(&self, batch: &Batch, mut boundaries: Option<&mut BTreeMap<String, Vec<u8>>>) -> HeadOutputs {
        let mut heads: [Option<HeadValues>; 3] = [None, None, None];
        for i in 0..batch.len() {
            let values = if let Some(state) = &self.int8 {
                // Host-side input quantization: one f32 multiply per value (docs/NUMERICS.md, A).
                let quantize = |x: &[f32], q: ActQuant| x.iter().map(|&v| q.quantize(v)).collect();
                let (seq, stat) = (quantize(batch.seq_row(i), state.seq), quantize(batch.stat_row(i), state.stat));
                self.forward_int8(seq, stat, boundaries.as_deref_mut())
            } else {
                self.forward_f32(batch.seq_row(i), batch.stat_row(i), &mut |_, _| {}).map(Value::F32)
            };
            for (slot, v) in heads.iter_mut().zip(values) {
                match (slot.get_or_insert_with(|| empty_like(&v)), v) {
                    (HeadValues::Logits(all), Value::F32(v)) => all.extend(v),
                    (HeadValues::Accumulators(all), Value::Acc(v)) => all.extend(v),
                    _ => unreachable!("a head keeps its kind across rows"),
                }
            }
        }
        let [ltv, churn, segment] = heads.map(|h| h.unwrap_or(HeadValues::Logits(Vec::new())));
        HeadOutputs { ltv, churn, segment }
    }
}

fn empty_like(v: &Value) -> HeadValues {
    match v {
        Value::Acc(_) => HeadValues::Accumulators(Vec::new()),
        _ => HeadValues::Logits(Vec::new()),
    }
}

impl Plan for ReferencePlan {
    fn backend(&self) -> BackendKind {
        BackendKind::Reference
    }

    fn describe(&self) -> String {
        format!("reference ({}; plain loops, one thread)", self.precision)
    }

    fn run(&self, batch: &Batch) -> Result<HeadOutputs> {
        Ok(self.run_rows(batch, None))
    }

    fn trace(&self, batch: &Batch) -> Result<Trace> {
        let mut boundaries = BTreeMap::new();
        let heads = self.run_rows(batch, Some(&mut boundaries));
        Ok(Trace { boundaries, heads })
    }
}

/// The one convolution loop: `y[o,t] = b[o] ⊕ Σ_c Σ_j mac(w[o,c,j], x[c, t+j−left])`, where positions
/// outside the input contribute nothing (they are real zeros). f32 and int8 differ only in `mac`.
#[allow(clippy::too_many_arguments)]
fn conv1d<X: Copy, W: Copy, A: Copy>(
    x: &[X],
    in_shape: &[usize],
    w: &[W],
    b: &[A],
    out_c: usize,
    k: usize,
    pad: Padding,
    mac: impl Fn(A, W, X) -> A,
) -> Vec<A> {
    let (in_c, t_in) = (in_shape[0], in_shape[1]);
    let (left, t_out) = (pad.left(k) as isize, pad.out_len(t_in, k));
    let mut y = Vec::with_capacity(out_c * t_out);
    for o in 0..out_c {
        for t in 0..t_out {
            let mut acc = b[o];
            for c in 0..in_c {
                for j in 0..k {
                    let pos = t as isize + j as isize - left;
                    if (0..t_in as isize).contains(&pos) {
                        acc = mac(acc, w[(o * in_c + c) * k + j], x[c * t_in + pos as usize]);
                    }
                }
            }
            y.push(acc);
        }
    }
    y
}

/// fp32 cross-correlation, stride 1, zero padding.
pub fn conv1d_f32(
    x: &[f32],
    in_shape: &[usize],
    w: &[f32],
    b: &[f32],
    out_c: usize,
    k: usize,
    pad: Padding,
) -> Vec<f32> {
    conv1d(x, in_shape, w, b, out_c, k, pad, |a, w, x| a + w * x)
}

/// The int8 convolution's accumulators: `b[o] + Σ w · (q − z_in)`; padding contributes nothing
/// (it is the real value 0, i.e. q = z_in).
#[allow(clippy::too_many_arguments)]
pub fn conv1d_acc(
    x: &[u8],
    in_shape: &[usize],
    z_in: u8,
    w: &[i8],
    b: &[i32],
    out_c: usize,
    k: usize,
    pad: Padding,
) -> Vec<i32> {
    conv1d(x, in_shape, w, b, out_c, k, pad, |a, w, x| a + w as i32 * (x as i32 - z_in as i32))
}

pub fn dense_f32(x: &[f32], w: &[f32], b: &[f32], units: usize) -> Vec<f32> {
    (0..units)
        .map(|o| b[o] + w[o * x.len()..(o + 1) * x.len()].iter().zip(x).map(|(w, x)| w * x).sum::<f32>())
        .collect()
}

/// `b[o] + Σ_j w[o,j] · (x[j] − z[j])`, with each input's own zero point (Concat parts differ).
pub fn dense_acc(x: &[u8], zeros: &[u8], w: &[i8], b: &[i32], units: usize) -> Vec<i32> {
    let n = x.len();
    assert_eq!(zeros.len(), n, "one zero point per input");
    (0..units)
        .map(|o| {
            let mut a = b[o];
            for j in 0..n {
                a += w[o * n + j] as i32 * (x[j] as i32 - zeros[j] as i32);
            }
            a
        })
        .collect()
}

/// The global average pool's accumulators: `Σ_t (q − z_in)` per channel of `[C, T]`.
pub fn gap_acc(x: &[u8], t: usize, z_in: u8) -> Vec<i32> {
    x.chunks(t).map(|c| c.iter().map(|&v| v as i32 - z_in as i32).sum()).collect()
}

/// Resolves every node's int8 parameters of a validated int8 model.
fn int8_state(model: &Model) -> Int8State {
    let q = model.quantization().expect("validated int8 model");
    let (g, shapes) = (model.graph(), &model.shapes);
    let segments = q.segment_map(g, shapes).expect("validated at open");
    let nodes = g
        .nodes
        .iter()
        .map(|n| {
            let Ok(input) = segments.per_element(&n.inputs[0]) else { return Int8Node::default() };
            let z_out = q.activations.get(&n.output).map(|a| a.zero_point);
            let requant = q.layers.get(&n.name).map(LayerQuant::requants).unwrap_or_default();
            Int8Node { input, z_out, requant }
        })
        .collect();
    Int8State { seq: q.activations[SEQ], stat: q.activations[STATIC], nodes }
}

/// Window 2, stride 2 over time for `[C, T]`; a trailing odd step is dropped.
pub fn max_pool<T: Copy>(x: &[T], in_shape: &[usize], max: fn(T, T) -> T) -> Vec<T> {
    let (c, t) = (in_shape[0], in_shape[1]);
    let mut y = Vec::with_capacity(c * (t / 2));
    for ch in 0..c {
        for i in 0..t / 2 {
            y.push(max(x[ch * t + 2 * i], x[ch * t + 2 * i + 1]));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::graph::{Heads, InputSizes, Node};
    use crate::model::tensor::{Tensor, Weights};
    use crate::model::{ModelFile, ModelMeta};

    #[test]
    fn conv1d_same_and_valid_by_hand() {
        // One input channel [1, 2, 3], kernel [1, 0, -1], bias 0.5.
        let (x, w, b) = ([1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [0.5]);
        // same: left pad 1 → windows [0,1,2], [1,2,3], [2,3,0]
        assert_eq!(conv1d_f32(&x, &[1, 3], &w, &b, 1, 3, Padding::Same), vec![-1.5, -1.5, 2.5]);
        assert_eq!(conv1d_f32(&x, &[1, 3], &w, &b, 1, 3, Padding::Valid), vec![-1.5]);
        // Even kernel, same: left pad 0, right pad 1 → windows [1,2], [2,3], [3,0].
        assert_eq!(conv1d_f32(&x, &[1, 3], &[1.0, 10.0], &[0.0], 1, 2, Padding::Same), vec![21.0, 32.0, 3.0]);
        // int8: with z_in = 2, x − z = [−1, 0, 1] and padding contributes 0: windows [pad, −1, 0],
        // [−1, 0, 1], [0, 1, pad] give 0, −2, 0 (+ bias 5).
        assert_eq!(conv1d_acc(&[1, 2, 3], &[1, 3], 2, &[1, 0, -1], &[5], 1, 3, Padding::Same), vec![5, 3, 5]);
    }

    #[test]
    fn dense_pool_by_hand() {
        assert_eq!(dense_f32(&[1.0, 2.0], &[1.0, 1.0, 3.0, -1.0], &[0.0, 1.0], 2), vec![3.0, 2.0]);
        assert_eq!(dense_acc(&[10, 20], &[10, 0], &[1, 1, 3, -1], &[0, 1], 2), vec![20, -19]);
        assert_eq!(max_pool(&[1, 5, 3, 2, 9], &[1, 5], u8::max), vec![5, 3]);
        assert_eq!(gap_acc(&[1, 2, 3, 4, 5, 6], 3, 2), vec![0, 9]);
    }

    /// seq [1 channel × 4 weeks] → conv(k1, w=2, b=−3) → ReLU → max-pool → avg-pool → ⊕ static →
    /// heads. Every intermediate value by hand.
    #[test]
    fn whole_graph_by_hand() {
        let node = |name: &str, op: Op, inputs: &[&str]| Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: name.into(),
        };
        let graph = Graph {
            name: "by-hand".into(),
            inputs: InputSizes { seq_channels: 1, seq_len: 4, static_features: 1 },
            nodes: vec![
                node("conv", Op::Conv1d { out_channels: 1, kernel: 1, padding: Padding::Same }, &["seq"]),
                node("relu", Op::Relu, &["conv"]),
                node("pool", Op::MaxPool1d, &["relu"]),
                node("gap", Op::GlobalAvgPool, &["pool"]),
                node("cat", Op::Concat, &["gap", "static"]),
                node("ltv", Op::Dense { units: 3 }, &["cat"]),
                node("c", Op::Dense { units: 1 }, &["cat"]),
                node("churn", Op::Sigmoid, &["c"]),
                node("s", Op::Dense { units: 2 }, &["cat"]),
                node("segment", Op::Softmax, &["s"]),
            ],
            heads: Heads { ltv: "ltv".into(), churn: "churn".into(), segment: "segment".into() },
        };
        let t = |shape: Vec<usize>, v: Vec<f32>| Tensor::f32(shape, v);
        let weights: Weights = [
            ("conv.weight", t(vec![1, 1, 1], vec![2.0])),
            ("conv.bias", t(vec![1], vec![-3.0])),
            ("ltv.weight", t(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0])),
            ("ltv.bias", t(vec![3], vec![0.0, 0.0, 0.0])),
            ("c.weight", t(vec![1, 2], vec![1.0, -1.0])),
            ("c.bias", t(vec![1], vec![0.0])),
            ("s.weight", t(vec![2, 2], vec![0.0, 0.0, 1.0, 1.0])),
            ("s.bias", t(vec![2], vec![0.0, 0.0])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let meta = ModelMeta {
            graph,
            quantization: None,
            feature_spec: serde_json::json!({}),
            provenance: serde_json::json!({}),
            metrics: serde_json::json!({}),
            patterns: Default::default(),
        };
        let model = ModelFile { meta, weights }.into_model().unwrap();
        let plan = ReferencePlan::new(&model);
        let mut seen = HashMap::new();
        // seq [1, 2, 3, 0.5] → conv 2x−3 = [−1, 1, 3, −2] → ReLU [0, 1, 3, 0] → pool [1, 3] → gap 2.
        let heads = plan.forward_f32(&[1.0, 2.0, 3.0, 0.5], &[4.0], &mut |name, v| {
            seen.insert(name.to_string(), v.to_vec());
        });
        assert_eq!(seen["conv"], vec![-1.0, 1.0, 3.0, -2.0]);
        assert_eq!(seen["relu"], vec![0.0, 1.0, 3.0, 0.0]);
        assert_eq!(seen["pool"], vec![1.0, 3.0]);
        assert_eq!(seen["gap"], vec![2.0]);
        assert_eq!(seen["cat"], vec![2.0, 4.0]);
        assert_eq!(heads, [vec![2.0, 4.0, 6.0], vec![-2.0], vec![0.0, 6.0]]);
    }
}
