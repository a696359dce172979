//! Runs any checked graph over a mini-batch: forward keeping every tensor, the multi-task loss on the
//! heads' logits, and backward accumulating weight gradients. Tensors use the ops' layout
//! `[rows, B, len]` (see ops.rs). The heads' Sigmoid and Softmax nodes are not run: the losses take
//! logits, and the scoring epilogue applies those activations.

use std::collections::HashMap;

use super::data::TrainData;
use super::loss::{HeadGrads, HeadLogits, LossWeights, Losses, multitask};
use super::ops::{self, InputGrad, Linear};
use super::params::{Grads, Params};
use crate::engine::Batch;
use crate::model::graph::{Graph, HeadKind, Op, SEQ, STATIC, Shapes};

/// Tensor ids of the graph inputs; node outputs follow in node order.
const SEQ_ID: usize = 0;
const STATIC_ID: usize = 1;

/// A per-customer tensor `[rows, len]`; a vector `[F]` is `[F, 1]`.
#[derive(Debug, Clone, Copy)]
struct Dims {
    rows: usize,
    len: usize,
}

impl Dims {
    fn of(shape: &[usize]) -> Dims {
        Dims { rows: shape[0], len: shape.get(1).copied().unwrap_or(1) }
    }

    fn per_customer(self) -> usize {
        self.rows * self.len
    }
}

#[derive(Debug, Clone)]
enum Kind {
    /// Conv1d or Dense: parameters 2·layer (weight) and 2·layer + 1 (bias); `batch` set per run.
    Linear {
        layer: usize,
        dims: Linear,
    },
    Relu,
    MaxPool,
    Gap,
    Concat,
}

#[derive(Debug, Clone)]
struct Step {
    kind: Kind,
    inputs: Vec<usize>,
    output: usize,
}

/// A graph compiled for training.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    steps: Vec<Step>,
    dims: Vec<Dims>,
    /// Whether a tensor depends on parameters (graph inputs and what is computed from them alone
    /// need no gradient).
    needs_grad: Vec<bool>,
    /// The tensors holding the ltv, churn and segment logits.
    heads: [usize; 3],
}

/// One worker's buffers, reused from mini-batch to mini-batch.
#[derive(Debug)]
pub(crate) struct Workspace {
    batch: usize,
    acts: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Per step: a convolution's im2col matrix, kept for its backward pass.
    cols: Vec<Vec<f32>>,
    dcols: Vec<f32>,
    pub param_grads: Grads,
}

impl Network {
    /// `shapes` from `graph.check()`.
    pub fn new(graph: &Graph, shapes: &Shapes) -> Network {
        let mut ids: HashMap<&str, usize> = HashMap::from([(SEQ, SEQ_ID), (STATIC, STATIC_ID)]);
        let mut dims = vec![Dims::of(&shapes[SEQ]), Dims::of(&shapes[STATIC])];
        let mut needs_grad = vec![false, false];
        let (mut steps, mut layer) = (Vec::new(), 0);
        for node in &graph.nodes {
            let inputs: Vec<usize> = node.inputs.iter().map(|i| ids[i.as_str()]).collect();
            let (x, y) = (dims[inputs[0]], Dims::of(&shapes[&node.output]));
            let kind = match node.op {
                Op::Conv1d { out_channels, kernel, padding } => {
                    let dims = Linear {
                        in_c: x.rows,
                        out_c: out_channels,
                        kernel,
                        left: padding.left(kernel),
                        t_in: x.len,
                        t_out: y.len,
                        batch: 0,
                    };
                    Kind::Linear { layer, dims }
                }
                Op::Dense { units } => Kind::Linear { layer, dims: Linear::dense(x.rows, units, 0) },
                Op::Relu => Kind::Relu,
                Op::MaxPool1d => Kind::MaxPool,
                Op::GlobalAvgPool => Kind::Gap,
                Op::Concat => Kind::Concat,
                // Head activations: the losses and the scoring epilogue apply them to the logits.
                Op::Sigmoid | Op::Softmax => continue,
            };
            let weighted = matches!(kind, Kind::Linear { .. });
            layer += usize::from(weighted);
            needs_grad.push(weighted || inputs.iter().any(|&i| needs_grad[i]));
            ids.insert(&node.output, dims.len());
            steps.push(Step { kind, inputs, output: dims.len() });
            dims.push(y);
        }
        let heads = HeadKind::ALL.map(|h| ids[graph.head_dense(h).output.as_str()]);
        Network { steps, dims, needs_grad, heads }
    }

    pub fn workspace(&self, params: &Params) -> Workspace {
        let n = self.dims.len();
        Workspace {
            batch: 0,
            acts: vec![Vec::new(); n],
            grads: vec![Vec::new(); n],
            cols: vec![Vec::new(); self.steps.len()],
            dcols: Vec::new(),
            param_grads: params.zeros(),
        }
    }

    /// Forward pass for customers `rows` of `data`, then their summed losses.
    pub fn loss(
        &self,
        params: &Params,
        ws: &mut Workspace,
        data: &TrainData,
        rows: &[usize],
        weights: &LossWeights,
    ) -> Losses {
        self.forward(params, ws, &data.inputs, rows);
        multitask(&self.logits(&ws.acts), &data.targets, rows, weights, None)
    }

    /// Forward, loss and backward for customers `rows`: returns their summed losses and leaves
    /// ∂(scale · Σ weighted loss)/∂parameters in `ws.param_grads`.
    pub fn gradient(
        &self,
        params: &Params,
        ws: &mut Workspace,
        data: &TrainData,
        rows: &[usize],
        weights: &LossWeights,
        scale: f64,
    ) -> Losses {
        self.forward(params, ws, &data.inputs, rows);
        for (g, (d, &needed)) in ws.grads.iter_mut().zip(self.dims.iter().zip(&self.needs_grad)) {
            g.clear();
            g.resize(if needed { d.per_customer() * ws.batch } else { 0 }, 0.0);
        }
        let [ltv, churn, segment] = ws.grads.get_disjoint_mut(self.heads).expect("the heads are distinct tensors");
        let grads = HeadGrads { scale, ltv, churn, segment };
        let losses = multitask(&self.logits(&ws.acts), &data.targets, rows, weights, Some(grads));
        self.backward(params, ws);
        losses
    }

    /// Head logits of customers `rows`, row-major per customer (`[rows, units]` for each head).
    pub fn predict(&self, params: &Params, ws: &mut Workspace, inputs: &Batch, rows: &[usize]) -> [Vec<f32>; 3] {
        self.forward(params, ws, inputs, rows);
        let n = rows.len();
        // Activations are `[units, B, 1]`: transpose each head to one row per customer.
        self.heads.map(|h| {
            let units = self.dims[h].rows;
            let a = &ws.acts[h];
            (0..n).flat_map(|b| (0..units).map(move |u| a[u * n + b])).collect()
        })
    }

    /// The head logits among a workspace's activations.
    fn logits<'a>(&self, acts: &'a [Vec<f32>]) -> HeadLogits<'a> {
        let [ltv, churn, segment] = self.heads.map(|h| acts[h].as_slice());
        HeadLogits { ltv, churn, segment }
    }

    /// Customers `rows` of `inputs` into the graph inputs, transposed to `[rows, B, len]`.
    fn load(&self, ws: &mut Workspace, inputs: &Batch, rows: &[usize]) {
        ws.batch = rows.len();
        for (id, row_of) in [(SEQ_ID, Batch::seq_row as fn(&Batch, usize) -> &[f32]), (STATIC_ID, Batch::stat_row)] {
            let Dims { rows: channels, len } = self.dims[id];
            let x = &mut ws.acts[id];
            x.resize(channels * rows.len() * len, 0.0);
            for (b, &customer) in rows.iter().enumerate() {
                for (c, src) in row_of(inputs, customer).chunks_exact(len).enumerate() {
                    x[(c * rows.len() + b) * len..][..len].copy_from_slice(src);
                }
            }
        }
    }

    fn forward(&self, params: &Params, ws: &mut Workspace, inputs: &Batch, rows: &[usize]) {
        self.load(ws, inputs, rows);
        for (i, step) in self.steps.iter().enumerate() {
            // Taken out so that the step can read its inputs from `acts` while writing it.
            let mut y = std::mem::take(&mut ws.acts[step.output]);
            y.resize(self.dims[step.output].per_customer() * ws.batch, 0.0);
            let x = &ws.acts[step.inputs[0]];
            let t_in = self.dims[step.inputs[0]].len;
            match &step.kind {
                Kind::Linear { layer, dims } => {
                    let (w, b) = (&params.values[2 * layer], &params.values[2 * layer + 1]);
                    ops::linear_forward(&Linear { batch: ws.batch, ..*dims }, x, w, b, &mut ws.cols[i], &mut y);
                }
                Kind::Relu => ops::relu_forward(x, &mut y),
                Kind::MaxPool => ops::max_pool_forward(x, t_in, &mut y),
                Kind::Gap => ops::gap_forward(x, t_in, &mut y),
                Kind::Concat => {
                    let parts: Vec<&[f32]> = step.inputs.iter().map(|&i| ws.acts[i].as_slice()).collect();
                    ops::concat_forward(&parts, &mut y);
                }
            }
            ws.acts[step.output] = y;
        }
    }

    /// From the head gradients already in `ws.grads` back to the parameters, in reverse step order.
    fn backward(&self, params: &Params, ws: &mut Workspace) {
        ws.param_grads.iter_mut().for_each(|g| g.fill(0.0));
        for (i, step) in self.steps.iter().enumerate().rev() {
            // A step whose output needs no gradient computes nothing from parameters; one that does has
            // an input that needs it too (a single-input op: that input).
            if !self.needs_grad[step.output] {
                continue;
            }
            // Taken out so that the step can add into its inputs' gradients (Concat may even list one
            // input twice).
            let dy = std::mem::take(&mut ws.grads[step.output]);
            let x = step.inputs[0];
            let t_in = self.dims[x].len;
            let wants = |t: usize| self.needs_grad[t];
            match &step.kind {
                Kind::Linear { layer, dims } => {
                    let (dw, db) = ws.param_grads[2 * layer..].split_at_mut(1);
                    let input = wants(x).then(|| InputGrad { dx: &mut ws.grads[x], dcols: &mut ws.dcols });
                    let l = Linear { batch: ws.batch, ..*dims };
                    let w = &params.values[2 * layer];
                    ops::linear_backward(&l, &ws.acts[x], &ws.cols[i], w, &dy, &mut dw[0], &mut db[0], input);
                }
                Kind::Relu => ops::relu_backward(&ws.acts[step.output], &dy, &mut ws.grads[x]),
                Kind::MaxPool => ops::max_pool_backward(&ws.acts[x], t_in, &dy, &mut ws.grads[x]),
                Kind::Gap => ops::gap_backward(&dy, t_in, &mut ws.grads[x]),
                Kind::Concat => {
                    let mut offset = 0;
                    for &part in &step.inputs {
                        if wants(part) {
                            ops::concat_backward(&dy, offset, &mut ws.grads[part]);
                        }
                        offset += self.dims[part].per_customer() * ws.batch;
                    }
                }
            }
            ws.grads[step.output] = dy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::data::Targets;
    use super::super::gradcheck::{Tol, check};
    use super::*;
    use crate::backend::reference::ReferencePlan;
    use crate::data::synthetic;
    use crate::model::graph::{Heads, InputSizes, Node, Padding};
    use crate::model::init::random_model;
    use crate::model::{Precision, Preset};
    use crate::rng::Rng;

    /// A graph with every op and the awkward cases: valid and even-kernel convolutions, an odd
    /// max-pool tail, a tensor with two consumers (the GAP output feeds Concat twice and a Dense), and
    /// the static input concatenated.
    fn every_op_graph() -> Graph {
        let node = |name: &str, op: Op, inputs: &[&str]| Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: name.into(),
        };
        let nodes = vec![
            node("c1", Op::Conv1d { out_channels: 3, kernel: 4, padding: Padding::Same }, &[SEQ]),
            node("r1", Op::Relu, &["c1"]),
            node("p1", Op::MaxPool1d, &["r1"]),
            node("c2", Op::Conv1d { out_channels: 4, kernel: 2, padding: Padding::Valid }, &["p1"]),
            node("gap", Op::GlobalAvgPool, &["c2"]),
            node("side", Op::Dense { units: 2 }, &["gap"]),
            node("cat", Op::Concat, &["gap", STATIC, "side", "gap"]),
            node("fc", Op::Dense { units: 6 }, &["cat"]),
            node("fc_relu", Op::Relu, &["fc"]),
            node("ltv", Op::Dense { units: 3 }, &["fc_relu"]),
            node("churn_logit", Op::Dense { units: 1 }, &["fc_relu"]),
            node("churn", Op::Sigmoid, &["churn_logit"]),
            node("segment_logits", Op::Dense { units: 3 }, &["fc_relu"]),
            node("segment", Op::Softmax, &["segment_logits"]),
        ];
        let inputs = InputSizes { seq_channels: 2, seq_len: 9, static_features: 3 };
        let heads = Heads { ltv: "ltv".into(), churn: "churn".into(), segment: "segment".into() };
        Graph { name: "every-op".into(), inputs, nodes, heads }
    }

    fn targets(n: usize, segments: u32, seed: u64) -> Targets {
        let mut rng = Rng::new(seed);
        Targets {
            spend: (0..n).map(|i| if i % 3 == 0 { 0.0 } else { (rng.normal() + 2.0).exp() as f32 }).collect(),
            churned: (0..n).map(|i| (i % 2) as f32).collect(),
            segment: (0..n).map(|i| i as u32 % segments).collect(),
            soft: None,
        }
    }

    fn setup(graph: &Graph, n: usize, seed: u64) -> (Network, Params, TrainData) {
        let shapes = graph.check().unwrap();
        let file = random_model(graph.clone(), Precision::Fp32, seed, 0.0).unwrap();
        let params = Params::from_weights(graph, &shapes, &file.weights).unwrap();
        let inputs = synthetic::customers(graph.inputs, n, seed);
        let k = graph.segments(&shapes) as u32;
        (Network::new(graph, &shapes), params, TrainData { inputs, targets: targets(n, k, seed) })
    }

    const WEIGHTS: LossWeights = LossWeights { ltv: 1.0, churn: 0.7, segment: 1.3 };

    #[test]
    fn forward_logits_match_the_reference_backend() {
        for graph in
            [every_op_graph(), Preset::Base.graph(InputSizes { seq_channels: 3, seq_len: 11, static_features: 4 })]
        {
            let (net, params, data) = setup(&graph, 5, 3);
            let model = crate::model::ModelFile {
                meta: random_model(graph.clone(), Precision::Fp32, 3, 0.0).unwrap().meta,
                weights: params.to_weights(),
            }
            .into_model()
            .unwrap();
            let plan = ReferencePlan::new(&model);
            let mut ws = net.workspace(&params);
            let rows = [4, 0, 2];
            net.forward(&params, &mut ws, &data.inputs, &rows);
            let got = net.logits(&ws.acts);
            for (b, &row) in rows.iter().enumerate() {
                let expected = plan.forward_f32(data.inputs.seq_row(row), data.inputs.stat_row(row), &mut |_, _| {});
                for (head, want) in [got.ltv, got.churn, got.segment].into_iter().zip(&expected) {
                    for (u, e) in want.iter().enumerate() {
                        let a = head[u * rows.len() + b];
                        assert!((a - e).abs() <= 1e-5 + 1e-4 * e.abs(), "{}: {a} vs {e}", graph.name);
                    }
                }
            }
        }
    }

    /// Which side of every kink the last forward pass was on: ReLU inputs' signs, max-pool winners.
    fn kink_sides(net: &Network, ws: &Workspace) -> Vec<bool> {
        let mut sides = Vec::new();
        for step in &net.steps {
            let x = &ws.acts[step.inputs[0]];
            match step.kind {
                Kind::Relu => sides.extend(x.iter().map(|&v| v > 0.0)),
                Kind::MaxPool => {
                    let t = net.dims[step.inputs[0]].len;
                    sides.extend(x.chunks_exact(t).flat_map(|r| (0..t / 2).map(move |i| r[2 * i] >= r[2 * i + 1])));
                }
                _ => {}
            }
        }
        sides
    }

    /// The whole chain — loss, head seeding, every op's backward, fan-out, parameter routing — against
    /// central differences of the mean multi-task loss, for every parameter of a small graph. With
    /// its kinks fixed the network is affine in any one weight, so a difference that stays on one
    /// side of every kink is exact but for f32 rounding and the loss's own curvature; the rare one
    /// that crosses a kink is skipped.
    #[test]
    fn graph_gradient_matches_finite_differences() {
        let graph = every_op_graph();
        let (net, mut params, mut data) = setup(&graph, 6, 11);
        let mut rng = Rng::new(12);
        let (seq, stat) = (data.inputs.seq().len(), data.inputs.stat().len());
        let normal = |rng: &mut Rng, n| (0..n).map(|_| rng.normal() as f32).collect();
        data.inputs = Batch::from_vecs(graph.inputs, normal(&mut rng, seq), normal(&mut rng, stat)).unwrap();
        // A sensible operating point for the ZILN head (sigma ≈ 1, mu near the log spends) keeps the
        // loss's curvature, and so the differences' truncation error, small.
        let ltv = params.names.iter().position(|n| n == "ltv.weight").unwrap();
        params.values[ltv].iter_mut().for_each(|w| *w *= 0.1);
        params.values[ltv + 1] = vec![0.0, 2.0, 0.54];

        let rows: Vec<usize> = (0..data.len()).collect();
        let scale = 1.0 / rows.len() as f64;
        let mut ws = net.workspace(&params);
        net.gradient(&params, &mut ws, &data, &rows, &WEIGHTS, scale);
        let sides = kink_sides(&net, &ws);
        let (mut probe, mut probe_ws) = (params.clone(), net.workspace(&params));
        let (mut skipped, mut total) = (0, 0);
        for (t, name) in params.names.iter().enumerate() {
            let analytic: Vec<f64> = ws.param_grads[t].iter().map(|&g| g as f64).collect();
            skipped += check(&params.values[t], &analytic, 1e-2, Tol { abs: 1e-4, rel: 1e-3 }, |v| {
                probe.values[t].copy_from_slice(v);
                let loss = net.loss(&probe, &mut probe_ws, &data, &rows, &WEIGHTS).total * scale;
                (kink_sides(&net, &probe_ws) == sides).then_some(loss)
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            probe.values[t].copy_from_slice(&params.values[t]);
            total += analytic.len();
        }
        assert!(skipped * 10 < total, "{skipped} of {total} differences crossed a kink");
    }

    #[test]
    fn shards_sum_to_the_whole_batch_gradient() {
        let graph = every_op_graph();
        let (net, params, data) = setup(&graph, 7, 5);
        let rows: Vec<usize> = (0..7).rev().collect();
        let mut whole = net.workspace(&params);
        let total = net.gradient(&params, &mut whole, &data, &rows, &WEIGHTS, 1.0);
        let (mut a, mut b) = (net.workspace(&params), net.workspace(&params));
        let mut sum = net.gradient(&params, &mut a, &data, &rows[..3], &WEIGHTS, 1.0);
        sum.add(&net.gradient(&params, &mut b, &data, &rows[3..], &WEIGHTS, 1.0));
        assert!((sum.total - total.total).abs() < 1e-9 * total.total.abs());
        super::super::params::add_into(&mut a.param_grads, &b.param_grads);
        for (x, y) in a.param_grads.iter().flatten().zip(whole.param_grads.iter().flatten()) {
            assert!((x - y).abs() <= 1e-4 + 1e-4 * y.abs(), "{x} vs {y}");
        }
    }
}
