//! A model on one CUDA device: the kernels of kernels/cuda compiled for the device's architecture,
//! the weights uploaded once when the plan is built, and per batch the inputs encoded on the host
//! (int8: quantized to u8 per docs/NUMERICS.md A), copied in, the launches run in order, and the
//! heads' outputs (i32 accumulators or f32 logits) copied back for the shared host epilogue.
//!
//! A batch of more than 8,192 customers runs as a pipeline of parts alternating between the GPU's
//! lanes (streams): while part i's inputs are copied in from page-locked memory and its kernels run,
//! the host encodes part i+1 and reads part i-1's outputs back, so copies, kernels and host work
//! overlap. Parts also stay within half of the device memory free at the time, so a large batch is
//! split rather than running out of memory. Buffers are kept between runs for the largest part
//! seen.
//!
//! The plan is written against [`Gpu`]: the CUDA driver on a GPU, the host emulation in tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use super::backend_err;
use super::compile::{Compiled, compile};
use super::gpu::{Arg, Gpu, Grid, LANES};
use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Input, SEQ_SLOT, Step, StepArg, append, read_outputs};
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
    /// Runs so far and each lane's buffers; also serialises runs, which share the lanes.
    state: Mutex<State<G::Buffer>>,
    /// Customers per part of a pipelined batch, at least and at most.
    part_bounds: (usize, usize),
    /// Host threads encoding inputs.
    threads: usize,
    /// Multiply-adds per customer the kernels run (zero weight blocks skipped).
    executed_macs: u64,
    /// The next `Buffers::generation`.
    generations: std::sync::atomic::AtomicU64,
    /// A slot only traced runs write; other runs' buffers give it one byte.
    trace_only: Option<usize>,
}

struct State<B> {
    runs: u64,
    lanes: Vec<Buffers<B>>,
}

/// A lane's per-batch buffers, with room for `capacity` customers (and their trace-only slot with
/// `traced`); `generation` tells them apart from any allocated before (recorded launch sequences
/// name their buffers).
pub(crate) struct Buffers<B> {
    pub(crate) slots: Vec<B>,
    pub(crate) capacity: usize,
    traced: bool,
    generation: u64,
}

/// Batches up to this many customers replay recorded launch sequences (CUDA graphs): for them a
/// launch per kernel costs more than the kernels.
const GRAPH_ROWS: usize = 4096;

/// Customers per part of a pipelined batch: at most this many, and at least
/// [`PIPELINE_MIN_ROWS`] (smaller parts would cost more in launches than overlap saves).
pub(crate) const PIPELINE_ROWS: usize = 65_536;
pub(crate) const PIPELINE_MIN_ROWS: usize = 8_192;

/// Customers per part for a batch of `rows` when at most `fit` fit in one lane's buffers: about a
/// quarter of the batch, so that a pipeline forms, within `bounds`.
pub(crate) fn part_size(rows: usize, fit: usize, bounds: (usize, usize)) -> usize {
    rows.div_ceil(4).clamp(bounds.0, bounds.1).min(fit).max(1)
}

impl<G: Gpu> CudaPlan<G> {
    /// The GPU's architecture decides the kernels: tensor cores from sm_80, dp4a before.
    /// `threads`: host threads encoding inputs.
    pub(crate) fn new(gpu: G, model: &Model, p: &Program, threads: usize) -> Result<CudaPlan<G>> {
        let Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding, densities, trace_only } =
            compile(model, p, gpu.arch() >= 80, gpu.shared_limit())?;
        let executed_macs = p.layer_macs().iter().zip(&densities).map(|(&m, d)| (m as f64 * d).round() as u64).sum();
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
            state: Mutex::new(State { runs: 0, lanes: Vec::new() }),
            part_bounds: (PIPELINE_MIN_ROWS, PIPELINE_ROWS),
            threads: threads.max(1),
            executed_macs,
            generations: Default::default(),
            trace_only,
        })
    }

    /// Customers one lane's buffers may hold: all lanes' buffers in at most half the device memory
    /// free now (the rest left for the driver, other processes and fragmentation), counting what
    /// this plan holds already as free.
    pub(crate) fn fit_rows(&self, held: usize, traced: bool) -> Result<usize> {
        let per_row = self.row_bytes(traced).max(1);
        let rows = (self.gpu.free_bytes()? + held) / 2 / LANES / per_row;
        if rows == 0 {
            return Err(backend_err(format!("{}: no device memory free for one customer", self.gpu.describe())));
        }
        Ok(rows)
    }

    /// Bytes per customer of the slots a run writes (the trace-only slot only when `traced`).
    fn row_bytes(&self, traced: bool) -> usize {
        let skipped = if traced { None } else { self.trace_only };
        self.slots.iter().enumerate().filter(|(i, _)| Some(*i) != skipped).map(|(_, b)| b).sum()
    }

    /// Scores `batch` in parts that fit the device, pipelined over the lanes, joined in order.
    fn scored(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        let mut state =
            self.state.lock().map_err(|_| backend_err("an earlier run panicked while holding the device".into()))?;
        state.runs += 1;
        if batch.is_empty() {
            return Ok(self.empty_outputs());
        }
        let held: usize = state.lanes.iter().map(|b| b.capacity * self.row_bytes(b.traced)).sum();
        let part = part_size(batch.len(), self.fit_rows(held, trace.is_some())?, self.part_bounds);
        let scored = self.pipeline(&mut state, batch, part, trace);
        if scored.is_err() {
            // Parts may still run on the other lane: nothing may free or reuse their buffers before.
            let _ = self.gpu.idle();
        }
        scored
    }

    /// The parts of `batch` (`part` customers each) queued on alternating lanes, each collected
    /// while the next one runs.
    fn pipeline(
        &self,
        state: &mut State<G::Buffer>,
        batch: &Batch,
        part: usize,
        mut trace: Option<&mut BTreeMap<String, Vec<u8>>>,
    ) -> Result<HeadOutputs> {
        self.ensure_buffers(state, part.min(batch.len()), trace.is_some())?;
        let starts: Vec<usize> = (0..batch.len()).step_by(part).collect();
        let mut joined: Option<HeadOutputs> = None;
        let mut pending: Option<(usize, usize)> = None;
        for (i, &start) in starts.iter().enumerate() {
            let lane = i % LANES;
            let rows = start..(start + part).min(batch.len());
            let n = rows.len();
            self.queue(lane, batch, rows, &mut state.lanes[lane], trace.is_some())?;
            // The previous part finishes while this one is queued behind it.
            if let Some((lane, n)) = pending.replace((lane, n)) {
                let out = self.collect(lane, n, &state.lanes[lane], trace.as_deref_mut())?;
                append(&mut joined, out);
            }
        }
        let (lane, n) = pending.expect("a non-empty batch has a part");
        let out = self.collect(lane, n, &state.lanes[lane], trace)?;
        append(&mut joined, out);
        Ok(joined.expect("a non-empty batch has outputs"))
    }

    /// Makes every lane's buffers hold at least `rows` customers (and their traces with `traced`).
    fn ensure_buffers(&self, state: &mut State<G::Buffer>, rows: usize, traced: bool) -> Result<()> {
        if state.lanes.len() == LANES && state.lanes.iter().all(|b| b.capacity >= rows && (b.traced || !traced)) {
            return Ok(());
        }
        self.gpu.idle()?;
        state.lanes.clear();
        for _ in 0..LANES {
            state.lanes.push(self.alloc(rows, traced)?);
        }
        Ok(())
    }

    /// Encodes customers `rows` of `batch`, queues their copies in and every launch on `lane`.
    fn queue(
        &self,
        lane: usize,
        batch: &Batch,
        rows: Range<usize>,
        bufs: &mut Buffers<G::Buffer>,
        traced: bool,
    ) -> Result<()> {
        let n = rows.len();
        self.write_inputs(lane, batch, rows, bufs)?;
        self.launch_all(lane, n, bufs, traced)
    }

    /// The head outputs (and the trace) of the `rows` customers last queued on `lane`.
    fn collect(
        &self,
        lane: usize,
        rows: usize,
        bufs: &Buffers<G::Buffer>,
        trace: Option<&mut BTreeMap<String, Vec<u8>>>,
    ) -> Result<HeadOutputs> {
        read_outputs(&self.heads, &self.boundaries, &self.slots, trace, |slot| {
            self.gpu.read(lane, &bufs.slots[slot], rows * self.slots[slot])
        })
    }

    fn empty_outputs(&self) -> HeadOutputs {
        let empty =
            |h: &Head| if h.acc { HeadValues::Accumulators(Vec::new()) } else { HeadValues::Logits(Vec::new()) };
        let [ltv, churn, segment] = &self.heads;
        HeadOutputs { ltv: empty(ltv), churn: empty(churn), segment: empty(segment) }
    }

    /// Buffers for `rows` customers (the trace-only slot a byte unless `traced`). Zeroed: the
    /// concatenated row's pooled part is written by a kernel, its static part by the host, and
    /// nothing may be left undefined if a model has neither.
    pub(crate) fn alloc(&self, rows: usize, traced: bool) -> Result<Buffers<G::Buffer>> {
        let skipped = if traced { None } else { self.trace_only };
        let sizes: Vec<usize> =
            self.slots.iter().enumerate().map(|(i, &row)| if Some(i) == skipped { 1 } else { rows * row }).collect();
        let slots = sizes.iter().map(|&bytes| self.gpu.alloc_zeroed(bytes)).collect::<Result<Vec<_>>>()?;
        let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Buffers { slots, capacity: rows, traced, generation })
    }

    /// The inputs the host writes for `rows` customers, as (input, slot, bytes): the sequence, and
    /// the concatenated rows with the static features in place when the model has static features.
    pub(crate) fn inputs(&self, rows: usize) -> Vec<(Input, usize, usize)> {
        let mut inputs = vec![(Input::Seq, SEQ_SLOT, rows * self.slots[SEQ_SLOT])];
        if self.static_features > 0 {
            inputs.push((Input::Static, self.concat.0, rows * self.slots[self.concat.0]));
        }
        inputs
    }

    /// Encodes customers `rows` of `batch` for `input` into `out`, on the plan's threads.
    pub(crate) fn encode_input(&self, batch: &Batch, rows: Range<usize>, input: Input, out: &mut [u8]) {
        let sizes = batch.sizes;
        if let Input::Seq = input {
            let per = sizes.seq_channels * sizes.seq_len;
            let x = &batch.seq()[rows.start * per..rows.end * per];
            self.encoding.encode_into(x, Input::Seq, out, self.threads);
        } else {
            let per = sizes.static_features;
            let stat = &batch.stat()[rows.start * per..rows.end * per];
            let (_, width, offset) = self.concat;
            self.encoding.concat_rows_into(stat, (width, offset, per), out, self.threads);
        }
    }

    /// Queues the encoding of customers `rows` of `batch` into `bufs` on `lane`, encoded straight
    /// into the lane's staging buffers.
    pub(crate) fn write_inputs(
        &self,
        lane: usize,
        batch: &Batch,
        rows: Range<usize>,
        bufs: &mut Buffers<G::Buffer>,
    ) -> Result<()> {
        for (input, slot, bytes) in self.inputs(rows.len()) {
            let mut fill = |out: &mut [u8]| self.encode_input(batch, rows.clone(), input, out);
            self.gpu.write(lane, input, bytes, &mut bufs.slots[slot], &mut fill)?;
        }
        Ok(())
    }

    /// Queues every launch of the model for the first `rows` customers of `bufs` on `lane`, as a
    /// recorded sequence for small batches; `traced`: the fusion boundaries kept on chip are written
    /// out too.
    pub(crate) fn launch_all(&self, lane: usize, rows: usize, bufs: &Buffers<G::Buffer>, traced: bool) -> Result<()> {
        if rows <= GRAPH_ROWS {
            let mut record = || self.launch_steps(lane, rows, bufs, traced, |_| Ok(()));
            return self.gpu.replay(lane, (rows, 2 * bufs.generation + u64::from(traced)), &mut record);
        }
        self.launch_steps(lane, rows, bufs, traced, |_| Ok(()))
    }

    /// As [`Self::launch_all`], calling `after` with each launch's kernel name once it is queued.
    pub(crate) fn launch_steps(
        &self,
        lane: usize,
        rows: usize,
        bufs: &Buffers<G::Buffer>,
        traced: bool,
        mut after: impl FnMut(&str) -> Result<()>,
    ) -> Result<()> {
        debug_assert!(rows <= bufs.capacity && (bufs.traced || !traced));
        for step in &self.steps {
            let name = self.kernels[step.kernel];
            let (total, grid) = launch_shape(step, rows)
                .ok_or_else(|| backend_err(format!("{name}: {rows} customers exceed one grid")))?;
            let args: Vec<Arg<'_, G::Buffer>> = std::iter::once(Arg::I64(total as i64))
                .chain(step.args.iter().map(|a| match a {
                    StepArg::Slot(i) => Arg::Buffer(&bufs.slots[*i]),
                    StepArg::Const(i) => Arg::Buffer(&self.consts[*i]),
                    StepArg::Int(v) => Arg::I32(*v),
                    StepArg::Tracing => Arg::I32(i32::from(traced)),
                }))
                .collect();
            self.gpu.launch(lane, name, grid, &args)?;
            after(name)?;
        }
        Ok(())
    }

    /// The slots holding head outputs, each once, with their bytes per customer.
    pub(crate) fn head_slots(&self) -> Vec<(usize, usize)> {
        let mut slots: Vec<usize> = self.heads.iter().map(|h| h.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        slots.into_iter().map(|s| (s, self.slots[s])).collect()
    }

    /// Launches per run.
    pub(crate) fn launch_count(&self) -> usize {
        self.steps.len()
    }

    pub(crate) fn runs(&self) -> u64 {
        self.state.lock().map(|s| s.runs).unwrap_or_default()
    }
}

impl<G: Gpu> Drop for CudaPlan<G> {
    /// The buffers' frees are not ordered with the lanes' work: wait for it first.
    fn drop(&mut self) {
        let _ = self.gpu.idle();
    }
}

/// A step's `total` argument and grid for `rows` customers: a thread per output value, or a block
/// per tile of customers. `None` past the largest grid.
fn launch_shape(step: &Step, rows: usize) -> Option<(usize, Grid)> {
    match step.tile {
        Some(tile) => {
            // gridDim.x stops at 2^31 - 1.
            let blocks = i32::try_from(rows.div_ceil(tile.customers)).ok()? as u32;
            Some((rows, Grid { blocks, threads: TILE_THREADS, shared_bytes: tile.shared_bytes as u32 }))
        }
        None => {
            let total = rows * step.per_row.iter().product::<usize>();
            let blocks = i32::try_from(total.div_ceil(BLOCK as usize)).ok()? as u32;
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

    fn executed_macs(&self) -> Option<u64> {
        Some(self.executed_macs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendChoice;
    use crate::backend::cuda::emulator::{ARCHS, Emulator};
    use crate::backend::cuda::nvrtc::SOURCES;
    use crate::data::synthetic;
    use crate::engine::Engine;
    use crate::model::Preset;
    use crate::model::init::{InitOptions, init};

    /// A batch in many parts alternates lanes and reuses their buffers, a later smaller batch the
    /// same buffers, untraced and traced runs take turns: the outputs equal the reference's, on the
    /// emulation of both kernel forms.
    #[test]
    fn pipelined_parts_join_in_order() {
        let opts = InitOptions {
            preset: Preset::Tiny,
            precision: Precision::Int8,
            seed: 5,
            sparsity: 0.0,
            inputs: None,
            block: None,
        };
        let model = init(&opts).unwrap().into_model().unwrap();
        let program = Program::compile(model.graph(), &model.shapes).unwrap();
        let reference = Engine::build(&model, BackendChoice::Kind(BackendKind::Reference)).unwrap();
        for arch in ARCHS {
            let gpu = match Emulator::open(&SOURCES[0], arch) {
                Ok(gpu) => gpu,
                Err(e) => return println!("skipped: {e}"),
            };
            let mut plan = CudaPlan::new(gpu, &model, &program, 2).unwrap();
            plan.part_bounds = (3, 5);
            for n in [23, 4, 1] {
                let batch = synthetic::customers(model.graph().inputs, n, n as u64);
                let want = reference.trace(&batch).unwrap();
                // A plain run (the trace-only slot a byte), then a traced one on grown buffers.
                assert_eq!(plan.run(&batch).unwrap(), want.heads, "{arch}, batch {n}");
                assert_eq!(plan.trace(&batch).unwrap(), want, "{arch}, batch {n}");
            }
            assert_eq!(plan.runs(), 6);
        }
    }
}
