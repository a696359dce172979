//! A model on one CUDA device: the kernels of kernels/cuda compiled for the device's architecture,
//! the weights uploaded once when the plan is built, and per batch the inputs encoded on the host
//! (int8: quantized to u8 per docs/NUMERICS.md A), copied in, the launches run in order, and the
//! heads' outputs (i32 accumulators or f32 logits) copied back for the shared host epilogue. A batch
//! runs in parts when its buffers would not fit in half of the device memory free at the time, so a
//! large batch is split rather than running out of memory.
//!
//! The plan is written against [`Gpu`]: the CUDA driver on a GPU, the host emulation in tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::backend_err;
use super::compile::{Compiled, compile};
use super::gpu::{Arg, Gpu, Grid};
use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Input, SEQ_SLOT, Step, StepArg, in_parts, read_outputs};
use crate::backend::{BackendKind, Plan, Trace};
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::Result;
use crate::model::{Model, Precision};

/// Threads per block: the one-thread-per-value kernels use no shared memory, so any multiple of the
/// warp size works (256 keeps several blocks per multiprocessor); the tiled tensor-core kernels
/// give each of 4 warps its own tiles.
const BLOCK: u32 = 256;
const TILE_THREADS: u32 = 128;

pub(crate) struct CudaPlan<G: Gpu> {
    pub(crate) gpu: G,
    precision: Precision,
    kernels: Vec<&'static str>,
    consts: Vec<G::Buffer>,
    /// Bytes per customer of each slot.
    slots: Vec<usize>,
    steps: Vec<Step>,
    encoding: Encoding,
    /// The concatenated-features slot, its row width in elements and the static features' offset.
    concat: (usize, usize, usize),
    static_features: usize,
    boundaries: Vec<Boundary>,
    heads: [Head; 3],
    /// Runs so far; also serialises runs, whose buffers share the one stream.
    runs: Mutex<u64>,
}

/// The per-batch buffers of one part, and the rows they hold.
pub(crate) struct Buffers<B> {
    pub(crate) slots: Vec<B>,
    pub(crate) rows: usize,
}

impl<G: Gpu> CudaPlan<G> {
    /// `arch` (e.g. 90) decides the kernels: tensor cores from sm_80, dp4a before.
    pub(crate) fn new(gpu: G, arch: u32, model: &Model, p: &Program) -> Result<CudaPlan<G>> {
        let Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding } =
            compile(model, p, arch >= 80)?;
        let consts = consts.iter().map(|c| gpu.upload(c)).collect::<Result<Vec<_>>>()?;
        Ok(CudaPlan {
            gpu,
            precision: model.precision(),
            kernels,
            consts,
            slots,
            steps,
            encoding,
            concat: (concat, p.concat_width(), p.concat_offsets().1),
            static_features: p.static_features,
            boundaries,
            heads,
            runs: Mutex::new(0),
        })
    }

    /// Customers per part: their buffers in at most half the device memory free now (the rest left
    /// for the driver, other processes and fragmentation).
    pub(crate) fn part_rows(&self) -> Result<usize> {
        let per_row: usize = self.slots.iter().sum::<usize>().max(1);
        let rows = self.gpu.free_bytes()? / 2 / per_row;
        if rows == 0 {
            return Err(backend_err(format!("{}: no device memory free for one customer", self.gpu.describe())));
        }
        Ok(rows)
    }

    /// Scores `batch` in parts that fit the device, joined in order.
    fn scored(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        let mut runs =
            self.runs.lock().map_err(|_| backend_err("an earlier run panicked while holding the device".into()))?;
        in_parts(batch, self.part_rows()?, trace, |part, trace| {
            *runs += 1;
            if part.is_empty() {
                return Ok(self.empty_outputs());
            }
            let mut bufs = self.alloc(part.len())?;
            self.write_inputs(part, &mut bufs)?;
            self.launch_all(&bufs)?;
            read_outputs(&self.heads, &self.boundaries, &self.slots, trace, |slot| self.gpu.read(&bufs.slots[slot]))
        })
    }

    fn empty_outputs(&self) -> HeadOutputs {
        let empty =
            |h: &Head| if h.acc { HeadValues::Accumulators(Vec::new()) } else { HeadValues::Logits(Vec::new()) };
        let [ltv, churn, segment] = &self.heads;
        HeadOutputs { ltv: empty(ltv), churn: empty(churn), segment: empty(segment) }
    }

    /// Buffers for `rows` customers. Zeroed: the concatenated row's pooled part is written by a
    /// kernel, its static part by the host, and nothing may be left undefined if a model has neither.
    pub(crate) fn alloc(&self, rows: usize) -> Result<Buffers<G::Buffer>> {
        let slots = self.slots.iter().map(|&row| self.gpu.alloc_zeroed(rows * row)).collect::<Result<Vec<_>>>()?;
        Ok(Buffers { slots, rows })
    }

    /// The host's encoding of `batch`'s inputs: the sequence slot's bytes, and the concatenated
    /// slot's (static features in place) when the model has static features.
    pub(crate) fn encode(&self, batch: &Batch) -> (Vec<u8>, Option<Vec<u8>>) {
        let seq = self.encoding.bytes(batch.seq(), Input::Seq);
        let (_, width, offset) = self.concat;
        let stat =
            (self.static_features > 0).then(|| self.encoding.concat_rows(batch, width, offset, self.static_features));
        (seq, stat)
    }

    /// The slots the host writes: the sequence, and the concatenated features when there are
    /// static ones.
    pub(crate) fn input_slots(&self) -> (usize, Option<usize>) {
        (SEQ_SLOT, (self.static_features > 0).then_some(self.concat.0))
    }

    fn write_inputs(&self, batch: &Batch, bufs: &mut Buffers<G::Buffer>) -> Result<()> {
        let (seq, stat) = self.encode(batch);
        let (seq_slot, stat_slot) = self.input_slots();
        self.gpu.write(&seq, &mut bufs.slots[seq_slot])?;
        if let (Some(bytes), Some(slot)) = (stat, stat_slot) {
            self.gpu.write(&bytes, &mut bufs.slots[slot])?;
        }
        Ok(())
    }

    /// Queues every launch of the model over `bufs`.
    pub(crate) fn launch_all(&self, bufs: &Buffers<G::Buffer>) -> Result<()> {
        for step in &self.steps {
            let name = self.kernels[step.kernel];
            let (total, grid) = launch_shape(step, bufs.rows)
                .ok_or_else(|| backend_err(format!("{name}: {} customers exceed one grid", bufs.rows)))?;
            let args: Vec<Arg<'_, G::Buffer>> = std::iter::once(Arg::I64(total as i64))
                .chain(step.args.iter().map(|a| match a {
                    StepArg::Slot(i) => Arg::Buffer(&bufs.slots[*i]),
                    StepArg::Const(i) => Arg::Buffer(&self.consts[*i]),
                    StepArg::Int(v) => Arg::I32(*v),
                }))
                .collect();
            self.gpu.launch(name, grid, &args)?;
        }
        Ok(())
    }

    pub(crate) fn runs(&self) -> u64 {
        self.runs.lock().map(|r| *r).unwrap_or_default()
    }
}

/// A step's `total` argument and grid for `rows` customers: a thread per output value, or a block
/// per tile of customers. `None` past the largest grid.
fn launch_shape(step: &Step, rows: usize) -> Option<(usize, Grid)> {
    match step.tile {
        Some(tile) => {
            let blocks = u32::try_from(rows.div_ceil(tile.customers)).ok()?;
            Some((rows, Grid { blocks, threads: TILE_THREADS, shared_bytes: tile.shared_bytes as u32 }))
        }
        None => {
            let total = rows * step.per_row.iter().product::<usize>();
            let blocks = u32::try_from(total.div_ceil(BLOCK as usize)).ok()?;
            Some((total, Grid { blocks, threads: BLOCK, shared_bytes: 0 }))
        }
    }
}

impl<G: Gpu + 'static> Plan for CudaPlan<G> {
    fn backend(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn describe(&self) -> String {
        let runs = self.runs();
        format!("cuda ({}; {}; {} run{})", self.precision, self.gpu.describe(), runs, if runs == 1 { "" } else { "s" })
    }

    fn run(&self, batch: &Batch) -> Result<HeadOutputs> {
        self.scored(batch, None)
    }

    fn trace(&self, batch: &Batch) -> Result<Trace> {
        let mut boundaries = BTreeMap::new();
        let heads = self.scored(batch, Some(&mut boundaries))?;
        Ok(Trace { boundaries, heads })
    }
}
