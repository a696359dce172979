//! `ltvx hw estimate`: what the exported kernel (export.rs) would cost on a board — an analytic
//! estimate from the network and the board profile, not synthesis. The model, stated once here and
//! in hw/fpga/README.md:
//!
//! - **DSPs**: a layer needs one multiplier per non-zero weight of its largest reuse group (the groups
//!   take turns, one per cycle); zero weights are absent from the source and cost none. DSPs are
//!   multipliers / the board's int8 multiplies per DSP, rounded up per layer, plus its requantization
//!   multiplies (32 × 31 bits, the profile's `requant_dsp` each): one for a convolution's requantize
//!   loop and for the pool, one per output of a dense layer's group. Multiplies the tools map to
//!   LUTs instead (small constants often are) are not modelled.
//! - **On-chip memory**: per layer its weights (8 bits per non-zero weight, as a ROM), its input
//!   buffer (a convolution's padded window `in_c × (t_conv + k − 1)` bytes; a dense layer's input row)
//!   and a convolution's i32 accumulators; each buffer is rounded up to whole blocks of the board's
//!   block RAM (BRAM36 or M20K). Width and port constraints, which can only add blocks, are not.
//! - **Cycles**: a layer's pipelined loop runs its own `reuse` iterations per step at an initiation
//!   interval of 1, every convolution step in turn, plus its pipeline depth (3 for the multiply, the
//!   adder tree's log2 of the widest sum, 3 for requantization); the pooling and copy loops run one
//!   value per cycle, and each loop drains before the next starts. The single task runs the stages of
//!   one customer in sequence, so a customer takes the sum and customers/s is the clock over it. The
//!   streaming form (`LTVX_STREAM`) gives each stage a kernel that spends its channel read, its loops
//!   and its channel write (a byte per cycle each) on one customer before the next: the pipeline's
//!   initiation interval is the slowest stage's cycles, customers/s the clock over that, and its
//!   latency the single task's plus each channel transfer once. Clock: the board profile's.
//! - **Fit**: DSPs and block RAM within 80% of the device (the shell and routing take the rest — a
//!   rule of thumb, not a vendor figure); the streaming form's channel FIFOs are listed beside it, not
//!   in it. LUTs are not estimated.

use serde_json::{Value, json};

use super::board::Board;
use super::export::STREAM;
use super::net::{Layer, Net, Shape};
use super::reuse::Reuse;
use super::stages::{Part, Stage};
use crate::error::{Error, Result};
use crate::model::Model;

/// Share of a device's DSPs and block RAM a kernel may plan on.
pub const USABLE: f64 = 0.8;

/// Pipeline stages of a multiply and of requantization.
const MULTIPLY_STAGES: u64 = 3;
const REQUANT_STAGES: u64 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    pub name: String,
    pub reuse: usize,
    pub weights: usize,
    pub nonzero: usize,
    pub multipliers: usize,
    pub dsp: u64,
    pub ram_bits: u64,
    pub ram_blocks: u64,
    /// Cycles between successive customers entering this layer (iterations per customer at II 1).
    pub interval: u64,
    pub latency: u64,
}

/// A kernel of the streaming form (stages.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct StageCost {
    pub kernel: String,
    /// Cycles it spends on one customer: reading its input (the previous stage's channel, or `seq`),
    /// its loops, writing its output channel. It takes the next customer only then, so this is also
    /// its initiation interval.
    pub cycles: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub layers: Vec<LayerCost>,
    /// The global average pool and the input copies: a value per cycle.
    pub other_cycles: u64,
    /// The pool's one requantization multiply.
    pub other_dsp: u64,
    pub dsp: u64,
    pub ram_blocks: u64,
    /// The single task: every stage in turn, one customer at a time.
    pub latency_cycles: u64,
    /// The streaming form: its kernels, a customer's way through all of them (each channel transfer
    /// counted once: the reader takes values as the writer sends them), and its channels' FIFOs.
    pub stages: Vec<StageCost>,
    pub stream_latency_cycles: u64,
    pub channel_ram_blocks: u64,
    pub clock_mhz: f64,
}

fn blocks(bits: u64, board: &Board) -> u64 {
    bits.div_ceil(board.ram_block_bits)
}

fn log2_ceil(n: usize) -> u64 {
    (usize::BITS - n.max(1).saturating_sub(1).leading_zeros()) as u64
}

fn layer_cost(l: &Layer, board: &Board) -> LayerCost {
    let multipliers = l.multipliers();
    let weight_bits = 8 * l.nonzero() as u64;
    let buffers: Vec<u64> = match l.shape {
        Shape::Conv { in_c, out_c, kernel, t_conv, .. } => {
            vec![8 * (in_c * (t_conv + kernel - 1)) as u64, 32 * (out_c * t_conv) as u64]
        }
        Shape::Dense { n_in, .. } => vec![8 * n_in as u64],
    };
    let ram_bits = weight_bits + buffers.iter().sum::<u64>();
    let ram_blocks = blocks(weight_bits, board) + buffers.iter().map(|&b| blocks(b, board)).sum::<u64>();
    let interval = (l.positions() * l.reuse) as u64;
    let depth = MULTIPLY_STAGES + log2_ceil(l.widest_sum() + 1) + if l.requant.is_some() { REQUANT_STAGES } else { 0 };
    LayerCost {
        name: l.name.clone(),
        reuse: l.reuse,
        weights: l.weights.len(),
        nonzero: l.nonzero(),
        multipliers,
        dsp: (multipliers as u64).div_ceil(board.int8_per_dsp) + l.requant_units() as u64 * board.requant_dsp,
        ram_bits,
        ram_blocks,
        interval,
        latency: interval + depth,
    }
}

/// Cycles of a stage's loops besides its layers' multiplier loops, a value per cycle each: a
/// convolution's padding fill and requantization, the pool and the static-feature copy.
fn loop_cycles(net: &Net, part: Part) -> u64 {
    let cycles = match part {
        Part::Conv(i) => match net.convs[i].shape {
            Shape::Conv { in_c, out_c, kernel, t_conv, pool, .. } => {
                in_c * (t_conv + kernel - 1) + out_c * if pool { t_conv / 2 } else { t_conv }
            }
            Shape::Dense { .. } => unreachable!("a convolution"),
        },
        Part::Pool => net.gap.channels + net.static_features,
        Part::Dense(_) | Part::Heads => 0,
    };
    cycles as u64
}

impl Estimate {
    pub fn of(net: &Net, board: &Board) -> Estimate {
        let layers: Vec<LayerCost> = net.layers().map(|l| layer_cost(l, board)).collect();
        let stages = net.stages();
        // A stage's own work: its loops and its layers, each multiplier loop drained before the next.
        let work =
            |st: &Stage| loop_cycles(net, st.part) + layers[st.layers(net)].iter().map(|l| l.latency).sum::<u64>();
        let seq = net.row("seq") as u64;
        let other_cycles = seq + stages.iter().map(|st| loop_cycles(net, st.part)).sum::<u64>();
        let latency_cycles = seq + stages.iter().map(work).sum::<u64>();
        let transfers: u64 = stages.iter().map(|st| st.output as u64).sum();
        let channel_ram_blocks =
            stages.iter().filter(|st| st.output > 0).map(|st| blocks(8 * st.depth() as u64, board)).sum();
        Estimate {
            dsp: layers.iter().map(|l| l.dsp).sum::<u64>() + board.requant_dsp,
            other_dsp: board.requant_dsp,
            ram_blocks: layers.iter().map(|l| l.ram_blocks).sum(),
            latency_cycles,
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, st)| StageCost {
                    kernel: st.kernel(i),
                    cycles: st.input as u64 + work(st) + st.output as u64,
                })
                .collect(),
            stream_latency_cycles: latency_cycles + transfers,
            channel_ram_blocks,
            other_cycles,
            layers,
            clock_mhz: board.clock_mhz,
        }
    }

    pub fn latency_us(&self) -> f64 {
        self.latency_cycles as f64 / self.clock_mhz
    }

    /// Customers per second of the single task: one customer at a time through the kernel.
    pub fn customers_per_s(&self) -> f64 {
        self.clock_mhz * 1e6 / self.latency_cycles as f64
    }

    /// The streaming form's bottleneck: its initiation interval is this stage's cycles.
    pub fn slowest_stage(&self) -> &StageCost {
        self.stages.iter().max_by_key(|s| s.cycles).expect("a network has stages")
    }

    /// Customers per second of the streaming form: one per initiation interval once it is full.
    pub fn stream_customers_per_s(&self) -> f64 {
        self.clock_mhz * 1e6 / self.slowest_stage().cycles as f64
    }

    fn dsp_share(&self, board: &Board) -> f64 {
        self.dsp as f64 / board.dsp as f64
    }

    fn ram_share(&self, board: &Board) -> f64 {
        self.ram_blocks as f64 / board.ram_blocks as f64
    }

    /// The resource nearest its limit.
    pub fn binding(&self, board: &Board) -> &'static str {
        if self.dsp_share(board) >= self.ram_share(board) { "dsp" } else { "block ram" }
    }

    /// `Ok` when DSPs and block RAM fit within the usable share of `board`; otherwise by how much
    /// they do not.
    pub fn fits(&self, board: &Board) -> std::result::Result<(), String> {
        let mut over = Vec::new();
        for (what, used, have) in
            [("DSPs", self.dsp, board.dsp), (board.ram_name.as_str(), self.ram_blocks, board.ram_blocks)]
        {
            let usable = (have as f64 * USABLE).floor() as u64;
            if used > usable {
                over.push(format!(
                    "{used} {what} needed, {usable} usable ({:.0}% of {have}): over by {} ({:.0}%)",
                    USABLE * 100.0,
                    used - usable,
                    (used - usable) as f64 * 100.0 / usable as f64
                ));
            }
        }
        if over.is_empty() { Ok(()) } else { Err(over.join("; ")) }
    }

    pub fn to_json(&self, board: &Board) -> Value {
        json!({
            "board": board.name,
            "board_file": board.file.display().to_string(),
            "clock_mhz": self.clock_mhz,
            "int8_multiplies_per_dsp": board.int8_per_dsp,
            "dsp_per_requantization": board.requant_dsp,
            "usable_share": USABLE,
            "layers": self.layers.iter().map(|l| json!({
                "name": l.name, "reuse_factor": l.reuse, "weights": l.weights, "nonzero": l.nonzero,
                "multipliers": l.multipliers, "dsp": l.dsp, "ram_bits": l.ram_bits, "ram_blocks": l.ram_blocks,
                "initiation_interval_cycles": l.interval, "latency_cycles": l.latency,
            })).collect::<Vec<_>>(),
            "other_cycles": self.other_cycles,
            "other_dsp": self.other_dsp,
            "stream": {
                "define": STREAM,
                "stages": self.stages.iter().map(|s| json!({"kernel": s.kernel, "cycles": s.cycles})).collect::<Vec<_>>(),
                "initiation_interval_cycles": self.slowest_stage().cycles,
                "slowest_stage": self.slowest_stage().kernel,
                "latency_cycles": self.stream_latency_cycles,
                "latency_us": self.stream_latency_cycles as f64 / self.clock_mhz,
                "customers_per_s": self.stream_customers_per_s(),
                "channel_ram_blocks": self.channel_ram_blocks,
            },
            "total": {
                "dsp": self.dsp, "dsp_available": board.dsp, "ram_blocks": self.ram_blocks,
                "ram_block": board.ram_name, "ram_blocks_available": board.ram_blocks,
                "latency_cycles": self.latency_cycles, "latency_us": self.latency_us(),
                "customers_per_s": self.customers_per_s(), "binding": self.binding(board),
                "fits": self.fits(board).is_ok(),
            },
        })
    }
}

/// The network of `model` at `reuse` and its estimate, or an error saying by how much it does not
/// fit and the smallest `--reuse-factor` (keeping the per-layer factors) that would.
pub fn checked(model: &Model, reuse: &Reuse, board: &Board) -> Result<(Net, Estimate)> {
    let net = Net::of(model, reuse)?;
    let e = Estimate::of(&net, board);
    let Err(over) = e.fits(board) else { return Ok((net, e)) };
    let widest = net.layers().map(Layer::outputs).max().unwrap_or(1);
    let fits = |r: usize| Net::of(model, &reuse.with_all(r)).is_ok_and(|n| Estimate::of(&n, board).fits(board).is_ok());
    let kept = if reuse.layers.is_empty() { "" } else { " (with these --layer-reuse factors)" };
    let hint = (reuse.all + 1..=widest).find(|&r| fits(r)).map_or_else(
        || format!("no --reuse-factor makes it fit{kept} (reuse trades DSPs for cycles; block RAM stays): pick a larger board or a smaller or pruned model"),
        |r| format!("--reuse-factor {r} fits{kept}"),
    );
    Err(Error::Input(format!("the model does not fit {}: {over}; {hint}", board.name)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::hw::board::BOARDS_DIR;
    use crate::model::init::{InitOptions, init};
    use crate::model::{Model, Precision, Preset};

    fn model(preset: Preset, sparsity: f64) -> Model {
        let opts = InitOptions { preset, precision: Precision::Int8, seed: 3, sparsity, inputs: None, block: None };
        init(&opts).unwrap().into_model().unwrap()
    }

    fn board(name: &str) -> Board {
        Board::find(name, Path::new(BOARDS_DIR)).unwrap()
    }

    fn net(m: &Model, reuse: usize) -> Net {
        Net::of(m, &Reuse::uniform(reuse)).unwrap()
    }

    /// Reuse trades multipliers for cycles: a dense layer at reuse r has about 1/r of the
    /// multipliers and r cycles per customer; groups cover every output once.
    #[test]
    fn reuse_trades_dsps_for_cycles() {
        let m = model(Preset::Tiny, 0.0);
        let b = board("u55c");
        let (one, four) = (net(&m, 1), net(&m, 4));
        let (e1, e4) = (Estimate::of(&one, &b), Estimate::of(&four, &b));
        for (l1, l4) in one.layers().zip(four.layers()) {
            let groups = l4.groups();
            assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), l4.outputs(), "{}", l4.name);
            assert!(groups.windows(2).all(|w| w[0].end == w[1].start));
            assert_eq!(l1.multipliers(), l1.nonzero());
            assert!(l4.multipliers() * l4.reuse >= l1.multipliers(), "{}", l4.name);
            assert!(l4.multipliers() <= l4.outputs().div_ceil(l4.reuse) * l4.reduction(), "{}", l4.name);
        }
        assert!(e4.dsp * 3 < e1.dsp && e4.latency_cycles > e1.latency_cycles);
        let fc1 = |e: &Estimate| e.layers.iter().find(|l| l.name == "fc1").unwrap().interval;
        assert_eq!((fc1(&e1), fc1(&e4)), (1, 4));
        // Same weights, same memory.
        assert_eq!(e1.ram_blocks, e4.ram_blocks);
    }

    /// A layer's own factor changes that layer alone: fewer multipliers and DSPs, more cycles;
    /// every other layer costs what it cost at the uniform factor.
    #[test]
    fn a_per_layer_factor_changes_that_layer_only() {
        let m = model(Preset::Tiny, 0.0);
        let b = board("u55c");
        let uniform = Estimate::of(&net(&m, 2), &b);
        let reuse = Reuse { all: 2, layers: vec![("fc1".into(), 8), ("conv1".into(), 1)] };
        let mixed = Estimate::of(&Net::of(&m, &reuse).unwrap(), &b);
        for (u, x) in uniform.layers.iter().zip(&mixed.layers) {
            match x.name.as_str() {
                "fc1" => {
                    assert_eq!((u.reuse, x.reuse), (2, 8));
                    assert!(x.multipliers * 3 < u.multipliers && x.dsp < u.dsp && x.interval == 4 * u.interval);
                }
                "conv1" => {
                    assert_eq!((u.reuse, x.reuse), (2, 1));
                    assert!(x.multipliers > u.multipliers && x.interval * 2 == u.interval);
                }
                _ => assert_eq!(u, x),
            }
        }
        let j = mixed.to_json(&b);
        let factors: Vec<u64> =
            j["layers"].as_array().unwrap().iter().map(|l| l["reuse_factor"].as_u64().unwrap()).collect();
        assert_eq!(factors, mixed.layers.iter().map(|l| l.reuse as u64).collect::<Vec<_>>());
        assert!(factors.contains(&8) && factors.contains(&1) && factors.contains(&2));
    }

    /// The streaming form's model: each stage's cycles are its input, its work and its output; the
    /// initiation interval is the slowest stage's, the latency the single task's plus each channel
    /// transfer once. A layer's factor moves its own stage's cycles only, by positions × Δreuse.
    #[test]
    fn the_streaming_pipeline_runs_at_its_slowest_stage() {
        let m = model(Preset::Base, 0.0);
        let b = board("u250");
        let (n8, mixed) = (net(&m, 8), Net::of(&m, &Reuse { all: 8, layers: vec![("conv2".into(), 16)] }).unwrap());
        let (e8, ex) = (Estimate::of(&n8, &b), Estimate::of(&mixed, &b));
        let stages = n8.stages();
        assert_eq!(e8.stages.len(), stages.len());
        assert_eq!(e8.slowest_stage().cycles, e8.stages.iter().map(|s| s.cycles).max().unwrap());
        let transfers: u64 = stages.iter().map(|s| s.output as u64).sum();
        assert_eq!(e8.stream_latency_cycles, e8.latency_cycles + transfers);
        assert!(e8.stream_customers_per_s() > e8.customers_per_s(), "the layers of consecutive customers overlap");
        let t_conv = match mixed.convs[1].shape {
            Shape::Conv { t_conv, .. } => t_conv as u64,
            Shape::Dense { .. } => unreachable!(),
        };
        for (i, (a, x)) in e8.stages.iter().zip(&ex.stages).enumerate() {
            let grew = if stages[i].part == Part::Conv(1) { 8 * t_conv } else { 0 };
            assert_eq!(x.cycles, a.cycles + grew, "{}", a.kernel);
        }
        let j = ex.to_json(&b);
        assert_eq!(j["stream"]["initiation_interval_cycles"].as_u64(), Some(ex.slowest_stage().cycles));
        assert_eq!(j["stream"]["stages"].as_array().unwrap().len(), stages.len());
        assert_eq!(j["stream"]["define"], "LTVX_STREAM");
    }

    #[test]
    fn pruned_layers_need_fewer_dsps_on_every_board() {
        let (dense, pruned) = (model(Preset::Tiny, 0.0), model(Preset::Tiny, 0.5));
        for name in Board::names(Path::new(BOARDS_DIR)) {
            let b = board(&name);
            let (d, p) = (Estimate::of(&net(&dense, 1), &b), Estimate::of(&net(&pruned, 1), &b));
            assert!(p.dsp < d.dsp, "{name}");
            assert!(d.layers.iter().zip(&p.layers).all(|(d, p)| p.dsp <= d.dsp && p.nonzero < d.nonzero));
            let j = d.to_json(&b);
            assert_eq!(j["total"]["dsp"].as_u64(), Some(d.dsp));
            assert!((j["total"]["latency_us"].as_f64().unwrap() * b.clock_mhz - d.latency_cycles as f64).abs() < 1e-6);
        }
    }

    /// The base preset at reuse 1 overflows every profile's DSPs; the error says by how much and
    /// which reuse factor fits, and that factor does (also around a per-layer factor, kept).
    #[test]
    fn a_model_that_does_not_fit_is_refused_with_a_reuse_factor_that_fits() {
        let m = model(Preset::Base, 0.0);
        let ltv_alone = |all| Reuse { all, layers: vec![("ltv".into(), 1)] };
        for name in Board::names(Path::new(BOARDS_DIR)) {
            let b = board(&name);
            for (reuse, kept) in [(Reuse::uniform as fn(usize) -> Reuse, false), (ltv_alone, true)] {
                let e = checked(&m, &reuse(1), &b).unwrap_err().to_string();
                assert!(e.contains("DSPs needed") && e.contains("over by"), "{e}");
                assert_eq!(e.contains("with these --layer-reuse factors"), kept, "{e}");
                let r: usize = e.split("--reuse-factor ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
                let (_, fits) = checked(&m, &reuse(r), &b).unwrap();
                assert!(fits.dsp as f64 <= b.dsp as f64 * USABLE, "{name}");
                assert!(checked(&m, &reuse(r - 1), &b).is_err(), "{name}: {r} is the smallest");
            }
        }
    }
}
