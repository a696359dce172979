//! Architecture presets. A preset fixes kernel sizes, widths and depth; the input sizes come from the
//! data's FeatureSpec when a model is trained, and default to the preset's own for `init`.

use std::fmt;
use std::str::FromStr;

use super::graph::{Graph, Heads, InputSizes, Node, Op, Padding, SEQ, STATIC};

/// Value classes of the segment head in every preset.
pub const SEGMENTS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The FPGA / edge size: under 20,000 multiply-adds per customer.
    Tiny,
    /// "value model v1", the network the peer benchmark measures: 517,760 MACs per customer.
    Base,
    /// The accelerator-benchmarking size: over 50× the MACs of base.
    Large,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Tiny, Preset::Base, Preset::Large];

    pub fn default_inputs(self) -> InputSizes {
        InputSizes { seq_channels: 4, seq_len: 52, static_features: 32 }
    }

    /// (convolutions as (out channels, kernel, max-pool after it), dense widths).
    fn shape(self) -> (&'static [(usize, usize, bool)], &'static [usize]) {
        match self {
            Preset::Tiny => (&[(8, 3, true), (16, 3, false)], &[32]),
            Preset::Base => (&[(32, 5, false), (32, 5, true), (64, 3, false)], &[256, 128]),
            Preset::Large => (
                &[(64, 5, false), (128, 5, false), (256, 5, true), (256, 3, false), (256, 3, false), (256, 3, false)],
                &[1024, 1024, 512],
            ),
        }
    }

    /// The preset's graph for the given input sizes. Convolutions use "same" padding, so any T ≥ 2
    /// works (the max-pool halves it).
    pub fn graph(self, inputs: InputSizes) -> Graph {
        let mut b = Builder::default();
        let (convs, denses) = self.shape();
        let mut x = SEQ.to_string();
        for (i, &(out_channels, kernel, pool)) in convs.iter().enumerate() {
            let name = format!("conv{}", i + 1);
            x = b.add(&name, Op::Conv1d { out_channels, kernel, padding: Padding::Same }, &[&x]);
            x = b.add(&format!("{name}_relu"), Op::Relu, &[&x]);
            if pool {
                x = b.add(&format!("{name}_pool"), Op::MaxPool1d, &[&x]);
            }
        }
        x = b.add("gap", Op::GlobalAvgPool, &[&x]);
        x = b.add("concat", Op::Concat, &[&x, STATIC]);
        for (i, &units) in denses.iter().enumerate() {
            let name = format!("fc{}", i + 1);
            x = b.add(&name, Op::Dense { units }, &[&x]);
            x = b.add(&format!("{name}_relu"), Op::Relu, &[&x]);
        }
        let ltv = b.add("ltv", Op::Dense { units: 3 }, &[&x]);
        let churn = b.add("churn_logit", Op::Dense { units: 1 }, &[&x]);
        let churn = b.add("churn", Op::Sigmoid, &[&churn]);
        let segment = b.add("segment_logits", Op::Dense { units: SEGMENTS }, &[&x]);
        let segment = b.add("segment", Op::Softmax, &[&segment]);
        Graph { name: format!("ltvx-{self}"), inputs, nodes: b.nodes, heads: Heads { ltv, churn, segment } }
    }
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    /// Adds a node whose output tensor is named after it; returns that name.
    fn add(&mut self, name: &str, op: Op, inputs: &[&str]) -> String {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            output: name.into(),
        });
        name.into()
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Base => "base",
            Preset::Large => "large",
        })
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| format!("unknown preset {s:?} (expected tiny, base or large)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn macs(p: Preset) -> u64 {
        let g = p.graph(p.default_inputs());
        let shapes = g.check().unwrap();
        g.total_macs(&shapes)
    }

    #[test]
    fn base_is_value_model_v1() {
        assert_eq!(macs(Preset::Base), 517_760);
        let g = Preset::Base.graph(Preset::Base.default_inputs());
        let shapes = g.check().unwrap();
        let params: usize =
            g.layers(&shapes).iter().map(|l| l.weight_shape.iter().product::<usize>() + l.out_channels).sum();
        assert_eq!(params, 70_921);
    }

    #[test]
    fn tiny_and_large_meet_their_budgets() {
        assert!(macs(Preset::Tiny) < 20_000, "{}", macs(Preset::Tiny));
        assert!(macs(Preset::Large) >= 50 * macs(Preset::Base), "{}", macs(Preset::Large));
    }

    #[test]
    fn presets_adapt_to_input_sizes() {
        for p in Preset::ALL {
            let g = p.graph(InputSizes { seq_channels: 7, seq_len: 13, static_features: 3 });
            g.check().unwrap();
        }
    }
}
