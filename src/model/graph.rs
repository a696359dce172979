//! The op graph: a small DAG of named per-customer tensors, with shape inference and the checks that
//! every model passes when it is built or opened.
//!
//! Shapes exclude the batch dimension: the sequence input is `[C, T]`, the static input `[F]`.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names of the two graph inputs.
pub const SEQ: &str = "seq";
pub const STATIC: &str = "static";

/// Upper bound on any dimension: keeps hostile files from claiming absurd sizes.
pub const MAX_DIM: usize = 1 << 16;
/// Upper bounds on a graph's size (the presets have under 40 nodes and 30 M MACs per customer).
pub const MAX_NODES: usize = 4096;
/// Upper bound on the elements of one customer's tensor (the large preset's biggest has 13,312).
pub const MAX_ELEMENTS: usize = 1 << 22;
/// Upper bound on the parts a Concat joins.
pub const MAX_CONCAT_INPUTS: usize = 64;
pub const MAX_LAYER_WEIGHTS: u64 = 1 << 30;
pub const MAX_MACS: u64 = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSizes {
    /// C: channels of the weekly activity sequence.
    pub seq_channels: usize,
    /// T: weeks in the sequence.
    pub seq_len: usize,
    /// F: static (per-customer) features.
    pub static_features: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Output length = input length; `(k−1)/2` zeros on the left, the rest on the right.
    Same,
    /// No padding; output length = input length − k + 1.
    Valid,
}

impl Padding {
    /// Zeros added before the first element.
    pub fn left(self, kernel: usize) -> usize {
        match self {
            Padding::Same => (kernel - 1) / 2,
            Padding::Valid => 0,
        }
    }

    pub fn out_len(self, len: usize, kernel: usize) -> usize {
        match self {
            Padding::Same => len,
            Padding::Valid => len + 1 - kernel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Cross-correlation over time, stride 1; weight `[out, in, kernel]`, bias `[out]`.
    Conv1d {
        out_channels: usize,
        kernel: usize,
        padding: Padding,
    },
    /// Weight `[units, in]`, bias `[units]`.
    Dense {
        units: usize,
    },
    Relu,
    /// Only as the churn head's activation.
    Sigmoid,
    /// Only as the segment head's activation.
    Softmax,
    /// Window 2, stride 2; a trailing odd step is dropped.
    MaxPool1d,
    /// Mean over time: `[C, T]` → `[C]`.
    GlobalAvgPool,
    /// Joins vectors: `[a] ⊕ [b] ⊕ …`.
    Concat,
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv1d { .. } => "conv1d",
            Op::Dense { .. } => "dense",
            Op::Relu => "relu",
            Op::Sigmoid => "sigmoid",
            Op::Softmax => "softmax",
            Op::MaxPool1d => "max_pool1d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Concat => "concat",
        }
    }

    pub fn has_weights(&self) -> bool {
        matches!(self, Op::Conv1d { .. } | Op::Dense { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    pub inputs: Vec<String>,
    pub output: String,
}

/// The tensors that carry the three heads' final values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heads {
    /// `[3]` raw zero-inflated lognormal parameters (logit p, mu, raw sigma), from a Dense.
    pub ltv: String,
    /// `[1]`, a Sigmoid of a Dense.
    pub churn: String,
    /// `[K]`, a Softmax of a Dense.
    pub segment: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeadKind {
    Ltv,
    Churn,
    Segment,
}

impl HeadKind {
    pub const ALL: [HeadKind; 3] = [HeadKind::Ltv, HeadKind::Churn, HeadKind::Segment];
}

// Nodes flatten their op, which serde cannot combine with deny_unknown_fields: their fields are
// checked by `check_node_fields` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    pub name: String,
    pub inputs: InputSizes,
    /// In topological order: every input is a graph input or an earlier node's output.
    pub nodes: Vec<Node>,
    pub heads: Heads,
}

/// Per-customer shapes of every tensor, by name.
pub type Shapes = HashMap<String, Vec<usize>>;

/// A weighted layer's geometry, as the file's tensors must match it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    pub weight_shape: Vec<usize>,
    pub out_channels: usize,
    /// Multiply-adds per customer, padding taps included (the usual convention).
    pub macs: u64,
    /// The Dense that produces a head's logits: its accumulators end the int8 pipeline.
    pub head: Option<HeadKind>,
}

impl LayerInfo {
    /// Weights and biases.
    pub fn parameters(&self) -> usize {
        self.weight_shape.iter().product::<usize>() + self.out_channels
    }
}

/// A run of nodes that a fast backend executes as one kernel; its last output is a fusion boundary,
/// where every int8 backend's u8 tensor must equal the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedGroup {
    pub nodes: Vec<usize>,
    pub output: String,
}

impl Graph {
    /// Checks the whole graph and returns the shape of every tensor.
    pub fn check(&self) -> Result<Shapes> {
        let s = self.inputs;
        for (what, v, min) in
            [("seq_channels", s.seq_channels, 1), ("seq_len", s.seq_len, 1), ("static_features", s.static_features, 0)]
        {
            if v < min || v > MAX_DIM {
                return Err(Error::Graph(format!("input size {what} = {v} is outside {min}..={MAX_DIM}")));
            }
        }
        if s.seq_channels * s.seq_len > MAX_ELEMENTS {
            return Err(Error::Graph(format!("the sequence input has more than {MAX_ELEMENTS} values per customer")));
        }
        if self.nodes.len() > MAX_NODES {
            return Err(Error::Graph(format!("{} nodes; at most {MAX_NODES} are supported", self.nodes.len())));
        }
        let mut shapes: Shapes = HashMap::new();
        shapes.insert(SEQ.into(), vec![s.seq_channels, s.seq_len]);
        shapes.insert(STATIC.into(), vec![s.static_features]);
        let mut names = std::collections::HashSet::new();
        for node in &self.nodes {
            if node.name.is_empty() || !names.insert(node.name.as_str()) {
                return Err(Error::Graph(format!("node name {:?} is empty or used twice", node.name)));
            }
            if shapes.contains_key(&node.output) {
                return Err(Error::Graph(format!("node {}: tensor {:?} is defined twice", node.name, node.output)));
            }
            let ins: Vec<&Vec<usize>> = node
                .inputs
                .iter()
                .map(|i| match shapes.get(i) {
                    None => Err(Error::Graph(format!("node {}: input {i:?} is not defined before it", node.name))),
                    // An empty tensor (no static features) carries nothing a node could use.
                    Some(s) if s.contains(&0) => Err(Error::Graph(format!("node {}: input {i:?} is empty", node.name))),
                    Some(s) => Ok(s),
                })
                .collect::<Result<_>>()?;
            let out =
                infer(node, &ins).map_err(|e| Error::Graph(format!("node {} ({}): {e}", node.name, node.op.kind())))?;
            if out.iter().any(|&d| d == 0 || d > MAX_DIM) || out.iter().product::<usize>() > MAX_ELEMENTS {
                return Err(Error::Graph(format!("node {}: output shape {out:?} is empty or too large", node.name)));
            }
            shapes.insert(node.output.clone(), out);
        }
        self.check_heads(&shapes)?;
        self.check_uses()?;
        self.check_sizes(&shapes)?;
        Ok(shapes)
    }

    /// Weight counts and multiply-adds within bounds, computed without overflow.
    fn check_sizes(&self, shapes: &Shapes) -> Result<()> {
        let mut total: u64 = 0;
        for n in self.nodes.iter().filter(|n| n.op.has_weights()) {
            let (_, macs) = layer_size(&n.op, &shapes[&n.inputs[0]], &shapes[&n.output])
                .filter(|&(w, _)| w <= MAX_LAYER_WEIGHTS)
                .ok_or_else(|| Error::Graph(format!("layer {}: more than {MAX_LAYER_WEIGHTS} weights", n.name)))?;
            total = total.saturating_add(macs);
        }
        if total > MAX_MACS {
            return Err(Error::Graph(format!("{total} multiply-adds per customer; at most {MAX_MACS} are supported")));
        }
        Ok(())
    }

    fn check_heads(&self, shapes: &Shapes) -> Result<()> {
        let h = &self.heads;
        let dense_of = |tensor: &str, act: Option<Op>| -> Result<usize> {
            let head = self
                .producer(tensor)
                .ok_or_else(|| Error::Graph(format!("head tensor {tensor:?} is not produced by any node")))?;
            let dense = match act {
                None => head,
                Some(a) => {
                    if self.nodes[head].op != a {
                        return Err(Error::Graph(format!("head tensor {tensor:?} must come from a {} node", a.kind())));
                    }
                    self.producer(&self.nodes[head].inputs[0]).unwrap_or(usize::MAX)
                }
            };
            match self.nodes.get(dense) {
                Some(n) if matches!(n.op, Op::Dense { .. }) => Ok(dense),
                _ => Err(Error::Graph(format!("head tensor {tensor:?} must come from a dense layer"))),
            }
        };
        // Heads end the graph: their values exist only in the host epilogue, so nothing may read
        // them, and a head layer's logits feed only their activation.
        let uses = self.consumer_counts();
        let used = |t: &str| uses.get(t).copied().unwrap_or(0);
        for (tensor, act, allowed_uses) in
            [(&h.ltv, None, 0), (&h.churn, Some(Op::Sigmoid), 1), (&h.segment, Some(Op::Softmax), 1)]
        {
            let dense = &self.nodes[dense_of(tensor, act)?];
            if used(&dense.output) != allowed_uses || used(tensor) != 0 {
                return Err(Error::Graph(format!("head {tensor:?}: its values may not feed other nodes")));
            }
        }
        let dim = |t: &str| shapes[t].clone();
        if dim(&h.ltv) != [3] {
            return Err(Error::Graph(format!("the ltv head must have 3 outputs, has {:?}", dim(&h.ltv))));
        }
        if dim(&h.churn) != [1] {
            return Err(Error::Graph(format!("the churn head must have 1 output, has {:?}", dim(&h.churn))));
        }
        if dim(&h.segment).len() != 1 || dim(&h.segment)[0] < 2 {
            return Err(Error::Graph(format!("the segment head needs at least 2 classes, has {:?}", dim(&h.segment))));
        }
        for n in &self.nodes {
            let allowed = match n.op {
                Op::Sigmoid => n.output == h.churn,
                Op::Softmax => n.output == h.segment,
                _ => true,
            };
            if !allowed {
                return Err(Error::Graph(format!(
                    "node {}: {} is supported only as a head activation",
                    n.name,
                    n.op.kind()
                )));
            }
        }
        Ok(())
    }

    /// Every node's output feeds something: a graph with dead branches is a mistake.
    fn check_uses(&self) -> Result<()> {
        let uses = self.consumer_counts();
        let heads = [&self.heads.ltv, &self.heads.churn, &self.heads.segment];
        for n in &self.nodes {
            if uses.get(n.output.as_str()).copied().unwrap_or(0) == 0 && !heads.contains(&&n.output) {
                return Err(Error::Graph(format!("node {}: output {:?} is never used", n.name, n.output)));
            }
        }
        Ok(())
    }

    pub fn consumer_counts(&self) -> HashMap<&str, usize> {
        let mut uses = HashMap::new();
        for n in &self.nodes {
            for i in &n.inputs {
                *uses.entry(i.as_str()).or_insert(0) += 1;
            }
        }
        uses
    }

    /// Index of the node that produces `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.output == tensor)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Which head, if any, a Dense node's output feeds.
    pub fn head_of(&self, node: &Node) -> Option<HeadKind> {
        let h = &self.heads;
        if node.output == h.ltv {
            return Some(HeadKind::Ltv);
        }
        self.nodes.iter().find(|n| n.inputs.first() == Some(&node.output)).and_then(|n| {
            if n.output == h.churn && n.op == Op::Sigmoid {
                Some(HeadKind::Churn)
            } else if n.output == h.segment && n.op == Op::Softmax {
                Some(HeadKind::Segment)
            } else {
                None
            }
        })
    }

    /// The Dense node that computes a head's logits.
    pub fn head_dense(&self, head: HeadKind) -> &Node {
        self.nodes
            .iter()
            .find(|n| matches!(n.op, Op::Dense { .. }) && self.head_of(n) == Some(head))
            .expect("checked graphs have all three heads")
    }

    /// The weighted layers, in order. Requires a checked graph.
    pub fn layers(&self, shapes: &Shapes) -> Vec<LayerInfo> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let input = &shapes[&n.inputs[0]];
                let (weight_shape, out_channels) = match n.op {
                    Op::Conv1d { out_channels, kernel, .. } => (vec![out_channels, input[0], kernel], out_channels),
                    Op::Dense { units } => (vec![units, input[0]], units),
                    _ => return None,
                };
                let (_, macs) = layer_size(&n.op, input, &shapes[&n.output]).expect("sizes checked");
                Some(LayerInfo { name: n.name.clone(), weight_shape, out_channels, macs, head: self.head_of(n) })
            })
            .collect()
    }

    /// Nodes grouped the way fast backends fuse them: Conv1d [→ ReLU] [→ MaxPool1d] and
    /// Dense [→ ReLU], each step only when the previous output has no other consumer. Head
    /// activations are not part of any group: they run in the host epilogue.
    pub fn fused_groups(&self) -> Vec<FusedGroup> {
        let uses = self.consumer_counts();
        let sole_consumer = |tensor: &str, op: &Op| -> Option<usize> {
            if uses.get(tensor) != Some(&1) {
                return None;
            }
            self.nodes.iter().position(|n| n.inputs.first().map(String::as_str) == Some(tensor) && &n.op == op)
        };
        let mut groups = Vec::new();
        let mut taken = vec![false; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if taken[i] || matches!(n.op, Op::Sigmoid | Op::Softmax) {
                continue;
            }
            let mut nodes = vec![i];
            let follow: &[Op] = match n.op {
                Op::Conv1d { .. } => &[Op::Relu, Op::MaxPool1d],
                Op::Dense { .. } if self.head_of(n).is_none() => &[Op::Relu],
                _ => &[],
            };
            for op in follow {
                let last = &self.nodes[*nodes.last().expect("non-empty")].output;
                if let Some(j) = sole_consumer(last, op) {
                    nodes.push(j);
                }
            }
            for &j in &nodes {
                taken[j] = true;
            }
            let output = self.nodes[*nodes.last().expect("non-empty")].output.clone();
            groups.push(FusedGroup { nodes, output });
        }
        groups
    }

    pub fn total_macs(&self, shapes: &Shapes) -> u64 {
        self.layers(shapes).iter().map(|l| l.macs).sum()
    }

    /// Number of segment classes K.
    pub fn segments(&self, shapes: &Shapes) -> usize {
        shapes[&self.heads.segment][0]
    }
}

/// (weights, multiply-adds per customer) of a weighted layer, `None` on overflow.
fn layer_size(op: &Op, input: &[usize], output: &[usize]) -> Option<(u64, u64)> {
    let mul = |dims: &[usize]| dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    match *op {
        // Every output step of every output channel takes in_channels × kernel taps.
        Op::Conv1d { out_channels, kernel, .. } => {
            let weights = mul(&[out_channels, input[0], kernel])?;
            Some((weights, weights.checked_mul(output[1] as u64)?))
        }
        Op::Dense { units } => mul(&[units, input[0]]).map(|w| (w, w)),
        _ => Some((0, 0)),
    }
}

/// Refuses fields a node of its op does not have (a `stride` or `dilation` this version would
/// silently ignore would change the meaning). `node` is the node's JSON object.
pub fn check_node_fields(node: &serde_json::Value) -> std::result::Result<(), String> {
    let Some(fields) = node.as_object() else { return Err("a node is not a JSON object".into()) };
    let op_fields: &[&str] = match fields.get("op").and_then(|v| v.as_str()) {
        Some("conv1d") => &["out_channels", "kernel", "padding"],
        Some("dense") => &["units"],
        _ => &[],
    };
    match fields
        .keys()
        .find(|k| !["name", "op", "inputs", "output"].contains(&k.as_str()) && !op_fields.contains(&k.as_str()))
    {
        Some(k) => Err(format!("node {}: unknown field {k:?}", fields.get("name").unwrap_or(&serde_json::Value::Null))),
        None => Ok(()),
    }
}

fn infer(node: &Node, ins: &[&Vec<usize>]) -> std::result::Result<Vec<usize>, String> {
    let one = || -> std::result::Result<&Vec<usize>, String> {
        match ins {
            [x] => Ok(x),
            _ => Err(format!("takes exactly one input, has {}", ins.len())),
        }
    };
    let rank2 = |x: &Vec<usize>| -> std::result::Result<(usize, usize), String> {
        match x[..] {
            [c, t] => Ok((c, t)),
            _ => Err(format!("needs a [channels, time] input, got {x:?}")),
        }
    };
    match node.op {
        Op::Conv1d { out_channels, kernel, padding } => {
            let (_, t) = rank2(one()?)?;
            if kernel == 0 || kernel > MAX_DIM {
                return Err(format!("kernel size {kernel} is invalid"));
            }
            if padding == Padding::Valid && t < kernel {
                return Err(format!("kernel {kernel} is longer than the input ({t} steps) without padding"));
            }
            Ok(vec![out_channels, padding.out_len(t, kernel)])
        }
        Op::Dense { units } => match one()?[..] {
            [_] => Ok(vec![units]),
            ref x => Err(format!("needs a vector input, got {x:?}")),
        },
        Op::Relu => Ok(one()?.clone()),
        Op::Sigmoid | Op::Softmax => match one()?[..] {
            [n] => Ok(vec![n]),
            ref x => Err(format!("needs a vector input, got {x:?}")),
        },
        Op::MaxPool1d => {
            let (c, t) = rank2(one()?)?;
            if t < 2 {
                return Err(format!("needs at least 2 time steps, got {t}"));
            }
            Ok(vec![c, t / 2])
        }
        Op::GlobalAvgPool => Ok(vec![rank2(one()?)?.0]),
        Op::Concat => {
            if !(2..=MAX_CONCAT_INPUTS).contains(&ins.len()) {
                return Err(format!("joins 2 to {MAX_CONCAT_INPUTS} inputs, has {}", ins.len()));
            }
            let mut n = 0;
            for x in ins {
                match x[..] {
                    [k] => n += k,
                    _ => return Err(format!("joins vectors only, got {x:?}")),
                }
            }
            Ok(vec![n])
        }
    }
}

/// The graph rendered as one line per node, for `ltvx info`.
pub fn describe(graph: &Graph, shapes: &Shapes) -> Vec<String> {
    let layers: BTreeMap<String, LayerInfo> = graph.layers(shapes).into_iter().map(|l| (l.name.clone(), l)).collect();
    let width = graph.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    graph
        .nodes
        .iter()
        .map(|n| {
            let attrs = match n.op {
                Op::Conv1d { out_channels, kernel, padding } => {
                    format!(" out={out_channels} k={kernel} pad={padding:?}")
                }
                Op::Dense { units } => format!(" units={units}"),
                _ => String::new(),
            };
            let macs = layers.get(&n.name).map(|l| format!("  {} MACs", l.macs)).unwrap_or_default();
            format!(
                "{:<width$} {:<16}{attrs} [{}] -> {:?}{macs}",
                n.name,
                n.op.kind(),
                n.inputs.join(", "),
                shapes[&n.output]
            )
        })
        .collect()
}
