//! A model's int8 network as the hardware sees it: each layer with its shapes, its s8 weights, its
//! bias with the zero-point terms folded in (docs/NUMERICS.md D, as every int8 backend folds them),
//! its requantization and its own reuse factor (reuse.rs) — the number of cycles one multiplier array
//! is reused for one output vector. Export and estimate both read this one description, so the
//! estimate counts exactly the multiplies the generated kernel contains.

use crate::backend::cpu::int8::fold_zero_points;
use crate::backend::cpu::program::Program;
use crate::error::{Error, Result};
use crate::model::graph::{SEQ, STATIC};
use crate::model::quant::ActQuant;
use crate::model::{Model, Precision};

use super::reuse::Reuse;

/// What a layer computes, with its sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Conv1d (stride 1) with ReLU and max-pool optionally fused.
    Conv { in_c: usize, out_c: usize, kernel: usize, left: usize, t_in: usize, t_conv: usize, pool: bool },
    /// Dense (the trunk) or a head (`requant` false: its i32 accumulators are the output).
    Dense { n_in: usize, n_out: usize },
}

/// One multiplying layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub shape: Shape,
    /// `[out][reduction]`, reduction `[in_c][kernel]` for convolutions.
    pub weights: Vec<i8>,
    pub bias: Vec<i32>,
    /// `None` for heads.
    pub requant: Option<Requant>,
    /// Output vectors (a conv step, a dense layer's outputs) split into this many groups, one per
    /// cycle: the multipliers are the largest group's non-zero weights.
    pub reuse: usize,
}

#[derive(Debug, Clone)]
pub struct Requant {
    pub mult: Vec<i32>,
    pub shift: Vec<i32>,
    pub z_out: i32,
    pub relu: bool,
}

/// The global average pool between the convolutions and the dense layers.
#[derive(Debug, Clone)]
pub struct Gap {
    pub channels: usize,
    pub steps: usize,
    pub mult: i32,
    pub shift: i32,
    pub z_in: i32,
    pub z_out: i32,
    /// Offset of the pooled features in the concatenated row.
    pub offset: usize,
}

#[derive(Debug, Clone)]
pub struct Net {
    pub seq: ActQuant,
    pub stat: ActQuant,
    pub seq_channels: usize,
    pub seq_len: usize,
    pub static_features: usize,
    /// Offset of the static features in the concatenated row, and the row's width.
    pub static_offset: usize,
    pub concat_width: usize,
    /// Zero point each convolution pads with (its input's).
    pub conv_pad: Vec<i32>,
    pub convs: Vec<Layer>,
    pub gap: Gap,
    pub denses: Vec<Layer>,
    /// ltv, churn, segment.
    pub heads: Vec<Layer>,
}

impl Layer {
    pub fn outputs(&self) -> usize {
        match self.shape {
            Shape::Conv { out_c, .. } => out_c,
            Shape::Dense { n_out, .. } => n_out,
        }
    }

    pub fn reduction(&self) -> usize {
        self.weights.len() / self.outputs()
    }

    /// Times the multiplier array runs per customer: every convolution step, once for a dense layer.
    pub fn positions(&self) -> usize {
        match self.shape {
            Shape::Conv { t_conv, .. } => t_conv,
            Shape::Dense { .. } => 1,
        }
    }

    pub fn nonzero(&self) -> usize {
        self.weights.iter().filter(|&&w| w != 0).count()
    }

    /// The outputs of each of the `reuse` groups: contiguous, sizes differing by at most one.
    pub fn groups(&self) -> Vec<std::ops::Range<usize>> {
        let (n, r) = (self.outputs(), self.reuse);
        (0..r).map(|g| g * n / r..(g + 1) * n / r).collect()
    }

    /// Multipliers the layer needs: the non-zero weights of its largest group (groups take turns).
    pub fn multipliers(&self) -> usize {
        let k = self.reduction();
        self.groups()
            .into_iter()
            .map(|g| self.weights[g.start * k..g.end * k].iter().filter(|&&w| w != 0).count())
            .max()
            .unwrap_or(0)
    }

    /// Requantization multiplies in flight: a convolution requantizes in its own loop, one value per
    /// cycle; a dense layer requantizes every output of a group in the same cycle; heads do not.
    pub fn requant_units(&self) -> usize {
        match (&self.requant, self.shape) {
            (None, _) => 0,
            (Some(_), Shape::Conv { .. }) => 1,
            (Some(_), Shape::Dense { .. }) => self.groups().iter().map(|g| g.len()).max().unwrap_or(0),
        }
    }

    /// Most non-zero terms of one output (the depth of its adder tree).
    pub fn widest_sum(&self) -> usize {
        self.weights.chunks(self.reduction().max(1)).map(|r| r.iter().filter(|&&w| w != 0).count()).max().unwrap_or(0)
    }
}

impl Net {
    /// The network of an int8 `model`, each layer at its factor of `reuse`.
    pub fn of(model: &Model, reuse: &Reuse) -> Result<Net> {
        let unsupported = |why: String| Error::Input(format!("the FPGA export needs {why}"));
        if model.precision() != Precision::Int8 {
            return Err(unsupported(format!(
                "an int8 model; this one is {} (ltvx compress --to int8)",
                model.precision()
            )));
        }
        let p = Program::compile(model.graph(), &model.shapes)
            .map_err(|e| unsupported(format!("the preset network shape: {e}")))?;
        let q = model.quantization().ok_or_else(|| unsupported("quantization parameters".into()))?;
        let segments = q.segment_map(model.graph(), &model.shapes)?;
        let input = |layer: &str| -> Result<Vec<ActQuant>> {
            let node = model.graph().node(layer).expect("compiled from this graph");
            segments.per_element(&node.inputs[0])
        };
        let z = |tensor: &str| q.activations[tensor].zero_point as i32;
        let output_z = |layer: &str| z(&model.graph().node(layer).expect("compiled from this graph").output);
        let layer = |name: &str, shape: Shape, relu: Option<bool>| -> Result<Layer> {
            if model.layer_precision(name) != Precision::Int8 {
                return Err(unsupported(format!(
                    "int8 heads; {name} is {} (compress without --f32-heads)",
                    model.layer_precision(name)
                )));
            }
            let weights = model.i8s(&format!("{name}.weight")).into_owned();
            let bias = model.i32s(&format!("{name}.bias"));
            let zeros: Vec<u8> = input(name)?.iter().map(|a| a.zero_point).collect();
            let reduction = weights.len() / bias.len();
            let zeros: Vec<u8> = zeros.iter().copied().cycle().take(reduction).collect();
            let bias = fold_zero_points(&weights, &bias, &zeros);
            let requant = relu.map(|relu| {
                let r = q.layers[name].requants();
                Requant {
                    mult: r.iter().map(|r| r.multiplier).collect(),
                    shift: r.iter().map(|r| r.shift as i32).collect(),
                    z_out: output_z(name),
                    relu,
                }
            });
            Ok(Layer { name: name.to_string(), shape, weights, bias, requant, reuse: 1 })
        };
        let mut conv_pad = Vec::new();
        let mut convs = Vec::new();
        for c in &p.convs {
            conv_pad.push(input(&c.layer)?[0].zero_point as i32);
            let shape = Shape::Conv {
                in_c: c.in_c,
                out_c: c.out_c,
                kernel: c.kernel,
                left: c.left,
                t_in: c.t_in,
                t_conv: c.t_conv,
                pool: c.pool,
            };
            convs.push(layer(&c.layer, shape, Some(c.relu))?);
        }
        let gap_r = q.layers[&p.gap_layer].requants();
        let gap = Gap {
            channels: p.gap_channels,
            steps: p.gap_steps,
            mult: gap_r[0].multiplier,
            shift: gap_r[0].shift as i32,
            z_in: input(&p.gap_layer)?[0].zero_point as i32,
            z_out: z(&p.gap_output),
            offset: p.concat_offsets().0,
        };
        let denses = p
            .denses
            .iter()
            .map(|d| layer(&d.layer, Shape::Dense { n_in: d.n_in, n_out: d.n_out }, Some(d.relu)))
            .collect::<Result<Vec<_>>>()?;
        let heads = p
            .heads
            .iter()
            .map(|(name, width)| layer(name, Shape::Dense { n_in: p.trunk_width, n_out: *width }, None))
            .collect::<Result<Vec<_>>>()?;
        let mut net = Net {
            seq: q.activations[SEQ],
            stat: q.activations[STATIC],
            seq_channels: p.seq_channels,
            seq_len: p.seq_len,
            static_features: p.static_features,
            static_offset: p.concat_offsets().1,
            concat_width: p.concat_width(),
            conv_pad,
            convs,
            gap,
            denses,
            heads,
        };
        let names: Vec<(&str, usize)> = net.layers().map(|l| (l.name.as_str(), l.outputs())).collect();
        let factors = reuse.resolve(&names)?;
        for (l, r) in net.layers_mut().zip(factors) {
            l.reuse = r;
        }
        Ok(net)
    }

    /// Every multiplying layer in order.
    pub fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.convs.iter().chain(&self.denses).chain(&self.heads)
    }

    fn layers_mut(&mut self) -> impl Iterator<Item = &mut Layer> {
        self.convs.iter_mut().chain(&mut self.denses).chain(&mut self.heads)
    }
}
