//! The network cut into pipeline stages: each convolution, the pool (global average pool plus the
//! static features: the concatenated row), each dense layer, and the three heads together. The
//! exported source writes each stage once, as a function over its input and output buffers; the
//! single task calls them in turn for each customer, and the streaming form (`LTVX_STREAM`) gives
//! each its own kernel, joined to the next by a channel (aoc) or pipe (v++), so consecutive customers
//! overlap across stages. Export, estimate and the host config all read this one list.

use std::ops::Range;

use super::net::{Net, Shape};

/// What a stage computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `net.convs[i]`.
    Conv(usize),
    /// Global average pool and static features into the concatenated row.
    Pool,
    /// `net.denses[i]`.
    Dense(usize),
    /// ltv, churn and segment, written to global memory.
    Heads,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub part: Part,
    /// Its name in identifiers: the layer's (as a C identifier), `pool` or `heads`.
    pub name: String,
    /// Bytes of one customer it takes in: the host's `seq` row for the first stage, else what the
    /// previous stage passes on.
    pub input: usize,
    /// Bytes of one customer it passes on; 0 for the heads, which write global memory.
    pub output: usize,
    /// The global buffers it reads or writes, in kernel-argument order (before `rows`).
    pub buffers: Vec<&'static str>,
}

/// The host's input and output buffers, in the single task's argument order.
pub const BUFFERS: [&str; 5] = ["seq", "stat", "ltv", "churn", "segment"];

/// Deepest channel a v++ pipe may be (UG1393, xcl_reqd_pipe_depth: 16 to 32768, powers of two).
const MAX_DEPTH: usize = 32768;

impl Stage {
    /// The function that computes it (both forms call it).
    pub fn function(&self, index: usize) -> String {
        format!("ltvx_{index}_{}", self.name)
    }

    /// Its kernel in the streaming form.
    pub fn kernel(&self, index: usize) -> String {
        format!("ltvx_stage{index}_{}", self.name)
    }

    /// The channel it writes (lower-case alphanumerics only: v++ refuses other pipe names).
    pub fn channel(index: usize) -> String {
        format!("ltvxc{index}")
    }

    /// The layers it runs, as indices into `net.layers()` (none for the pool).
    pub fn layers(&self, net: &Net) -> Range<usize> {
        let (convs, denses) = (net.convs.len(), net.denses.len());
        match self.part {
            Part::Conv(i) => i..i + 1,
            Part::Pool => 0..0,
            Part::Dense(i) => convs + i..convs + i + 1,
            Part::Heads => convs + denses..convs + denses + net.heads.len(),
        }
    }

    /// Depth of its output channel: a whole customer's vector, so the stage can finish one customer
    /// and start the next while its reader is still busy, rounded up to the power of two v++ needs.
    pub fn depth(&self) -> usize {
        self.output.next_power_of_two().clamp(16, MAX_DEPTH)
    }
}

/// A C identifier for a layer name.
pub fn ident(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

impl Net {
    /// The stages in order.
    pub fn stages(&self) -> Vec<Stage> {
        let mut stages = Vec::new();
        let mut input = self.seq_channels * self.seq_len;
        let mut push = |part, name: String, output, buffers: Vec<&'static str>| {
            let mut buffers = buffers;
            if stages.is_empty() {
                buffers.insert(0, "seq");
            }
            stages.push(Stage { part, name, input, output, buffers });
            input = output;
        };
        for (i, l) in self.convs.iter().enumerate() {
            let Shape::Conv { out_c, t_conv, pool, .. } = l.shape else { unreachable!("a conv layer") };
            let t_out = if pool { t_conv / 2 } else { t_conv };
            push(Part::Conv(i), ident(&l.name), out_c * t_out, vec![]);
        }
        push(Part::Pool, "pool".into(), self.concat_width, vec!["stat"]);
        for (i, l) in self.denses.iter().enumerate() {
            push(Part::Dense(i), ident(&l.name), l.outputs(), vec![]);
        }
        push(Part::Heads, "heads".into(), 0, vec!["ltv", "churn", "segment"]);
        stages
    }

    /// One customer's share of a host buffer: bytes of `seq` or `stat`, values of a head.
    pub fn row(&self, buffer: &str) -> usize {
        match buffer {
            "seq" => self.seq_channels * self.seq_len,
            "stat" => self.static_features,
            head => self.heads[BUFFERS[2..].iter().position(|&b| b == head).expect("a host buffer")].outputs(),
        }
    }
}
