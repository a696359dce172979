//! The network shape the CPU kernels run, recognised in a graph once per plan: a chain of
//! convolutions (each with an optional ReLU and max-pool fused in) over the activity sequence, a
//! global average pool, its concatenation with the static features, a chain of dense layers (optional
//! ReLU) and three dense heads on the last trunk tensor. Every preset has this shape; any other graph
//! gets a one-line reason and runs on the reference backend.

use crate::model::graph::{Graph, HeadKind, Op, SEQ, STATIC, Shapes};

#[derive(Debug, Clone)]
pub struct ConvStage {
    pub layer: String,
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    /// Zero-padding rows before the first step ("same": (k−1)/2).
    pub left: usize,
    pub t_in: usize,
    /// Convolution output steps (before any pool).
    pub t_conv: usize,
    pub relu: bool,
    pub pool: bool,
    /// The group's output tensor (a fusion boundary).
    pub output: String,
}

impl ConvStage {
    /// Steps this stage hands on: halved (floor) by the pool.
    pub fn t_out(&self) -> usize {
        if self.pool { self.t_conv / 2 } else { self.t_conv }
    }

    /// Zero-padding rows after the last step.
    pub fn right(&self) -> usize {
        self.t_conv + self.kernel - 1 - self.left - self.t_in
    }
}

#[derive(Debug, Clone)]
pub struct DenseStage {
    pub layer: String,
    pub n_in: usize,
    pub n_out: usize,
    pub relu: bool,
    pub output: String,
}

#[derive(Debug, Clone)]
pub struct Program {
    pub seq_channels: usize,
    pub seq_len: usize,
    pub static_features: usize,
    pub convs: Vec<ConvStage>,
    /// The pool layer's name and output tensor; its input is `[channels, steps]`.
    pub gap_layer: String,
    pub gap_output: String,
    pub gap_channels: usize,
    pub gap_steps: usize,
    /// The concat puts the pooled features first (else the static features first).
    pub gap_first: bool,
    /// `None` when the model has no static features (the pool feeds the dense layers directly).
    pub concat_output: Option<String>,
    pub denses: Vec<DenseStage>,
    /// Width of the tensor the heads read.
    pub trunk_width: usize,
    /// Head layers in `HeadKind::ALL` order (ltv, churn, segment) with their widths.
    pub heads: [(String, usize); 3],
}

impl Program {
    pub fn compile(graph: &Graph, shapes: &Shapes) -> Result<Program, String> {
        let mut groups = graph.fused_groups().into_iter().peekable();
        let node = |i: usize| &graph.nodes[i];
        let inputs = graph.inputs;
        let (mut convs, mut x) = (Vec::new(), SEQ.to_string());
        while let Some(g) = groups.next_if(|g| matches!(node(g.nodes[0]).op, Op::Conv1d { .. })) {
            let conv = node(g.nodes[0]);
            let Op::Conv1d { out_channels, kernel, padding } = conv.op else { unreachable!("checked above") };
            expect_input(conv, &x)?;
            let in_shape = &shapes[&conv.inputs[0]];
            let ops: Vec<&Op> = g.nodes[1..].iter().map(|&i| &node(i).op).collect();
            convs.push(ConvStage {
                layer: conv.name.clone(),
                in_c: in_shape[0],
                out_c: out_channels,
                kernel,
                left: padding.left(kernel),
                t_in: in_shape[1],
                t_conv: shapes[&conv.output][1],
                relu: ops.contains(&&Op::Relu),
                pool: ops.contains(&&Op::MaxPool1d),
                output: g.output.clone(),
            });
            x = g.output;
        }
        let gap = groups.next().map(|g| node(g.nodes[0])).filter(|n| n.op == Op::GlobalAvgPool);
        let gap = gap.ok_or("the sequence path does not end in a global average pool after the convolutions")?;
        expect_input(gap, &x)?;
        let gap_in = &shapes[&gap.inputs[0]];
        // Without static features there is no concat: the pooled features are the trunk's input.
        let concat = groups.next_if(|g| node(g.nodes[0]).op == Op::Concat).map(|g| node(g.nodes[0]));
        let gap_first = match concat.map(|c| c.inputs.iter().map(String::as_str).collect::<Vec<_>>()).as_deref() {
            None if inputs.static_features == 0 => true,
            Some([a, b]) if *a == gap.output && *b == STATIC => true,
            Some([a, b]) if *a == STATIC && *b == gap.output => false,
            _ => {
                return Err(
                    "the pooled features must be concatenated with the static features, and only with them".into()
                );
            }
        };
        let concat_output = concat.map(|c| c.output.clone());
        let (mut denses, mut x) = (Vec::new(), concat_output.clone().unwrap_or_else(|| gap.output.clone()));
        while let Some(g) = groups.next_if(|g| {
            let n = node(g.nodes[0]);
            matches!(n.op, Op::Dense { .. }) && graph.head_of(n).is_none()
        }) {
            let d = node(g.nodes[0]);
            let Op::Dense { units } = d.op else { unreachable!("checked above") };
            expect_input(d, &x)?;
            let relu = g.nodes[1..].iter().any(|&i| node(i).op == Op::Relu);
            denses.push(DenseStage {
                layer: d.name.clone(),
                n_in: shapes[&x][0],
                n_out: units,
                relu,
                output: g.output.clone(),
            });
            x = g.output;
        }
        let heads = HeadKind::ALL.map(|h| graph.head_dense(h));
        for h in heads {
            expect_input(h, &x)?;
        }
        if let Some(g) = groups.find(|g| !heads.iter().any(|h| h.name == node(g.nodes[0]).name)) {
            return Err(format!(
                "layer {} is outside the conv → pool → concat → dense → heads shape",
                node(g.nodes[0]).name
            ));
        }
        Ok(Program {
            seq_channels: inputs.seq_channels,
            seq_len: inputs.seq_len,
            static_features: inputs.static_features,
            convs,
            gap_layer: gap.name.clone(),
            gap_output: gap.output.clone(),
            gap_channels: gap_in[0],
            gap_steps: gap_in[1],
            gap_first,
            concat_output,
            denses,
            trunk_width: shapes[&x][0],
            heads: heads.map(|h| (h.name.clone(), shapes[&h.output][0])),
        })
    }

    /// Multiply-adds per customer of each weighted layer: convolutions, dense layers, the three heads.
    pub fn layer_macs(&self) -> Vec<u64> {
        let convs = self.convs.iter().map(|c| (c.out_c * c.in_c * c.kernel * c.t_conv) as u64);
        let denses = self.denses.iter().map(|d| (d.n_in * d.n_out) as u64);
        let heads = self.heads.iter().map(|h| (self.trunk_width * h.1) as u64);
        convs.chain(denses).chain(heads).collect()
    }

    /// Width of the concatenated features (the first dense layer's input).
    pub fn concat_width(&self) -> usize {
        self.gap_channels + self.static_features
    }

    /// Offsets of the pooled and the static features in the concatenated row.
    pub fn concat_offsets(&self) -> (usize, usize) {
        if self.gap_first { (0, self.gap_channels) } else { (self.static_features, 0) }
    }
}

fn expect_input(node: &crate::model::graph::Node, tensor: &str) -> Result<(), String> {
    if node.inputs.len() == 1 && node.inputs[0] == tensor {
        Ok(())
    } else {
        Err(format!("layer {} reads {:?}, not the chain's {tensor}", node.name, node.inputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::preset::Preset;

    #[test]
    fn every_preset_compiles() {
        for p in Preset::ALL {
            let g = p.graph(p.default_inputs());
            let shapes = g.check().unwrap();
            let prog = Program::compile(&g, &shapes).unwrap();
            assert_eq!(prog.heads.map(|h| h.1), [3, 1, 5]);
            assert!(prog.gap_first);
        }
        let g = Preset::Base.graph(Preset::Base.default_inputs());
        let prog = Program::compile(&g, &g.check().unwrap()).unwrap();
        let c: Vec<_> = prog.convs.iter().map(|c| (c.in_c, c.out_c, c.t_in, c.t_out(), c.relu, c.pool)).collect();
        assert_eq!(c, [(4, 32, 52, 52, true, false), (32, 32, 52, 26, true, true), (32, 64, 26, 26, true, false)]);
        assert_eq!((prog.gap_channels, prog.gap_steps, prog.concat_width(), prog.trunk_width), (64, 26, 96, 128));
        assert_eq!(prog.convs[0].right(), 2);
    }
}
