//! The GPU figures of `ltvx bench --backend cuda` beside the engine's end-to-end rows, timed with
//! CUDA events on the device:
//!
//! - **resident**: every kernel of one batch with its inputs already on the device (the form
//!   PyTorch's device-resident figures take), and each kernel's own time;
//! - **copies**: one batch's encoded (u8) inputs from page-locked host memory to the device and its
//!   head outputs back, and the customers/s those copies alone would allow (the slower direction:
//!   the two directions use separate copy engines and overlap);
//! - **pipelined**: encoded inputs in page-locked host memory to head outputs in page-locked host
//!   memory, the batch cut into parts alternating between two streams so that copies overlap
//!   kernels, compared with that copy bound (host encoding and the scores epilogue excluded: the
//!   engine's row has them);
//! - **peak**: the measured int8 tensor-core peak of `mma.sync` (`peak_mma_u8`; Hopper's warpgroup
//!   `wgmma` reaches more) and the resident run's share of it, counting useful multiply-adds only
//!   (not the padding of tiles to 16 x 32 x 32).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::backend_err;
use super::gpu::{Driver, Gpu, Grid, LANES, Pinned, driver_err, driver_version};
use super::plan::{Buffers, CudaPlan, PIPELINE_MIN_ROWS, PIPELINE_ROWS, part_size};
use crate::backend::Plan;
use crate::backend::cpu::program::Program;
use crate::engine::Batch;
use crate::error::Result;
use crate::model::{Model, Precision};

#[derive(Debug, Clone, Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceFigures {
    /// The GPU, its architecture and the CUDA driver version.
    pub device: String,
    pub driver: String,
    pub batch: usize,
    /// Every kernel of one batch, inputs and outputs on the device: median ms over repetitions.
    pub resident_ms: f64,
    pub resident_customers_per_s: f64,
    /// Each launch of one resident batch, in order (median ms).
    pub kernels: Vec<KernelTime>,
    /// One batch's encoded inputs host → device and head outputs device → host, page-locked memory,
    /// median ms, and the bandwidths they reached.
    pub h2d_ms: f64,
    pub d2h_ms: f64,
    pub h2d_gb_per_s: f64,
    pub d2h_gb_per_s: f64,
    /// Customers/s the copies alone allow: the batch over the slower direction's time.
    pub copy_bound_customers_per_s: f64,
    /// Page-locked u8 inputs to page-locked head outputs, parts pipelined over two streams.
    pub pipelined_customers_per_s: f64,
    pub pipelined_part: usize,
    pub pipelined_share_of_copy_bound: f64,
    /// Tera operations per second of the resident run (two per multiply-add executed: zero blocks
    /// skipped are not counted).
    pub resident_tops: f64,
    /// The measured int8 `mma.sync` peak (int8 models on sm_80 or later; Hopper's `wgmma` is faster
    /// still), and the resident run's share of it.
    pub peak_tops: Option<f64>,
    pub peak_share: Option<f64>,
}

/// Measures `model` on GPU `device` for `batch`, spending about `duration`.
pub fn measure(model: &Model, device: usize, batch: &Batch, duration: Duration) -> Result<DeviceFigures> {
    if let Some(reason) = super::probe(device).reason {
        return Err(backend_err(reason));
    }
    super::guarded(|| measure_on(model, device, batch, duration))
}

fn measure_on(model: &Model, device: usize, batch: &Batch, duration: Duration) -> Result<DeviceFigures> {
    let program = Program::compile(model.graph(), &model.shapes).map_err(backend_err)?;
    let plan = super::driver_plan(device, model, &program, 1)?;
    let arch = plan.gpu.arch();
    let rows = batch.len();
    let fit = plan.fit_rows(0, false)? * LANES;
    if rows > fit {
        return Err(backend_err(format!("batch {rows} does not fit on the device at once (at most {fit} customers)")));
    }
    let slice = duration / 4;
    let (resident_ms, kernels) = resident(&plan, batch, slice)?;
    let (h2d_ms, d2h_ms, h2d_bytes, d2h_bytes) = copies(&plan, batch, slice)?;
    let part = part_size(rows, fit / LANES, (PIPELINE_MIN_ROWS, PIPELINE_ROWS));
    let pipelined_s = pipelined(&plan, batch, part, slice)?;
    let macs = plan.executed_macs().unwrap_or(model.macs());
    let tops = rows as f64 / (resident_ms / 1e3) * 2.0 * macs as f64 / 1e12;
    let peak_tops = if model.precision() == Precision::Int8 && arch >= 80 { Some(peak(&plan.gpu)?) } else { None };
    let copy_bound = rows as f64 / (h2d_ms.max(d2h_ms) / 1e3);
    let pipelined_rate = rows as f64 / pipelined_s;
    Ok(DeviceFigures {
        device: plan.gpu.describe(),
        driver: driver_version(),
        batch: rows,
        resident_ms,
        resident_customers_per_s: rows as f64 / (resident_ms / 1e3),
        kernels,
        h2d_ms,
        d2h_ms,
        h2d_gb_per_s: h2d_bytes as f64 / (h2d_ms / 1e3) / 1e9,
        d2h_gb_per_s: d2h_bytes as f64 / (d2h_ms / 1e3) / 1e9,
        copy_bound_customers_per_s: copy_bound,
        pipelined_customers_per_s: pipelined_rate,
        pipelined_part: part,
        pipelined_share_of_copy_bound: pipelined_rate / copy_bound,
        resident_tops: tops,
        peak_tops,
        peak_share: peak_tops.map(|p| tops / p),
    })
}

/// Runs `once` (which returns milliseconds) at least three times and for about `slice`; the median.
fn median_ms(slice: Duration, mut once: impl FnMut() -> Result<f64>) -> Result<f64> {
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || (start.elapsed() < slice && times.len() < 1000) {
        times.push(once()?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The milliseconds between two events recorded on `lane` around `work`.
fn timed(gpu: &Driver, lane: usize, work: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = gpu.mark(lane)?;
    work()?;
    let end = gpu.mark(lane)?;
    start.elapsed_ms(&end).map(f64::from).map_err(|e| driver_err("timing", e))
}

/// Runs queued back to back between one pair of events, so that the device never waits for the
/// host between them (one run alone would time the submission too).
const BACK_TO_BACK: usize = 10;

/// Median ms of every kernel of one batch on the device (as the plan queues it: a recorded graph for
/// small batches), and each launch's median, timed by events queued between direct launches.
fn resident(plan: &CudaPlan<Driver>, batch: &Batch, slice: Duration) -> Result<(f64, Vec<KernelTime>)> {
    let rows = batch.len();
    let mut bufs = plan.alloc(rows, false)?;
    plan.write_inputs(0, batch, 0..rows, &mut bufs)?;
    // A warm-up run: first launches load the module's code (and record the graph).
    plan.launch_all(0, rows, &bufs, false)?;
    let gpu = &plan.gpu;
    let runs = || (0..BACK_TO_BACK).try_for_each(|_| plan.launch_all(0, rows, &bufs, false));
    let total = median_ms(slice / 2, || timed(gpu, 0, runs))? / BACK_TO_BACK as f64;
    let steps = plan.launch_count();
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); steps];
    let mut names = Vec::new();
    for _ in 0..5 {
        // Events made before anything is queued, so that making them adds no gaps between launches.
        let marks = (0..=steps).map(|_| gpu.event()).collect::<Result<Vec<_>>>()?;
        marks[0].record(&gpu.streams[0]).map_err(|e| driver_err("timing", e))?;
        names.clear();
        plan.launch_steps(0, rows, &bufs, false, |name| {
            names.push(name.to_string());
            marks[names.len()].record(&gpu.streams[0]).map_err(|e| driver_err("timing", e))
        })?;
        for (i, times) in per.iter_mut().enumerate() {
            times.push(f64::from(marks[i].elapsed_ms(&marks[i + 1]).map_err(|e| driver_err("timing", e))?));
        }
    }
    let kernels = names
        .into_iter()
        .zip(per)
        .map(|(kernel, mut ms)| {
            ms.sort_by(f64::total_cmp);
            KernelTime { kernel, ms: ms[ms.len() / 2] }
        })
        .collect();
    Ok((total, kernels))
}

/// Page-locked copies of one batch's encoded inputs and room for its head outputs, with the slot
/// each goes to or comes from and its bytes.
struct Staged {
    inputs: Vec<(usize, usize, Pinned)>,
    outputs: Vec<(usize, usize, Pinned)>,
}

impl Staged {
    fn new(plan: &CudaPlan<Driver>, batch: &Batch) -> Result<Staged> {
        let mut inputs = Vec::new();
        for (input, slot, bytes) in plan.inputs(batch.len()) {
            let mut pinned = Pinned::new(&plan.gpu.ctx, bytes)?;
            plan.encode_input(batch, 0..batch.len(), input, pinned.bytes_mut(bytes)?);
            inputs.push((slot, bytes, pinned));
        }
        let mut outputs = Vec::new();
        for (slot, per_row) in plan.head_slots() {
            let bytes = batch.len() * per_row;
            outputs.push((slot, bytes, Pinned::new(&plan.gpu.ctx, bytes)?));
        }
        Ok(Staged { inputs, outputs })
    }

    fn copy_in(&mut self, gpu: &Driver, lane: usize, bufs: &mut Buffers<cudarc::driver::CudaSlice<u8>>) -> Result<()> {
        for (slot, bytes, pinned) in &mut self.inputs {
            pinned.copy_to(*bytes, &mut bufs.slots[*slot], &gpu.streams[lane])?;
        }
        Ok(())
    }

    fn copy_out(&mut self, gpu: &Driver, lane: usize, bufs: &Buffers<cudarc::driver::CudaSlice<u8>>) -> Result<()> {
        for (slot, bytes, pinned) in &mut self.outputs {
            pinned.copy_from(*bytes, &bufs.slots[*slot], &gpu.streams[lane])?;
        }
        Ok(())
    }

    fn bytes(list: &[(usize, usize, Pinned)]) -> usize {
        list.iter().map(|(_, b, _)| b).sum()
    }
}

/// Median ms of one batch's inputs in and head outputs out, and the bytes each way.
fn copies(plan: &CudaPlan<Driver>, batch: &Batch, slice: Duration) -> Result<(f64, f64, usize, usize)> {
    let gpu = &plan.gpu;
    let mut bufs = plan.alloc(batch.len(), false)?;
    let mut staged = Staged::new(plan, batch)?;
    let h2d = median_ms(slice / 2, || {
        timed(gpu, 0, || (0..BACK_TO_BACK).try_for_each(|_| staged.copy_in(gpu, 0, &mut bufs)))
    })? / BACK_TO_BACK as f64;
    let d2h =
        median_ms(slice / 2, || timed(gpu, 0, || (0..BACK_TO_BACK).try_for_each(|_| staged.copy_out(gpu, 0, &bufs))))?
            / BACK_TO_BACK as f64;
    Ok((h2d, d2h, Staged::bytes(&staged.inputs), Staged::bytes(&staged.outputs)))
}

/// Seconds (median) for the whole batch from page-locked inputs to page-locked outputs, in parts
/// of `part` customers alternating between the lanes.
fn pipelined(plan: &CudaPlan<Driver>, batch: &Batch, part: usize, slice: Duration) -> Result<f64> {
    let gpu = &plan.gpu;
    let mut parts: Vec<(usize, Staged)> = (0..batch.len())
        .step_by(part)
        .map(|start| {
            let piece = batch.slice(start..(start + part).min(batch.len()));
            Ok((piece.len(), Staged::new(plan, &piece)?))
        })
        .collect::<Result<_>>()?;
    let mut lanes: Vec<Buffers<_>> = (0..LANES).map(|_| plan.alloc(part, false)).collect::<Result<_>>()?;
    let mut once = || -> Result<f64> {
        let start = Instant::now();
        for (i, (rows, staged)) in parts.iter_mut().enumerate() {
            let lane = i % LANES;
            // One stream per lane keeps a lane's parts in order: part i+2 is copied in only after
            // part i's outputs have been copied out.
            staged.copy_in(gpu, lane, &mut lanes[lane])?;
            plan.launch_all(lane, *rows, &lanes[lane], false)?;
            staged.copy_out(gpu, lane, &lanes[lane])?;
        }
        for s in &gpu.streams {
            s.synchronize().map_err(|e| driver_err("pipeline", e))?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    once()?;
    Ok(median_ms(slice, once)? / 1e3)
}

/// The int8 peak of `mma.sync` in tera-ops/s (on Hopper the warpgroup `wgmma` instructions reach
/// more; ltvx's kernels use `mma.sync`, so this is their ceiling): many waves of peak_mma_u8 blocks,
/// so that a partial last wave weighs little, timed with events (median of several runs).
fn peak(gpu: &Driver) -> Result<f64> {
    const ITERS: i32 = 512;
    let sms = gpu
        .ctx
        .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map_err(|e| driver_err("multiprocessor count", e))? as u32;
    let grid = Grid { blocks: sms * 64, threads: 256, shared_bytes: 0 };
    let threads = (grid.blocks * grid.threads) as usize;
    let out = gpu.alloc_zeroed(threads * 4)?;
    let launch = || {
        gpu.launch(
            0,
            "peak_mma_u8",
            grid,
            &[super::gpu::Arg::I64(threads as i64), super::gpu::Arg::Buffer(&out), super::gpu::Arg::I32(ITERS)],
        )
    };
    launch()?;
    let ms = median_ms(Duration::from_millis(200), || timed(gpu, 0, launch))?;
    let ops = (threads / 32) as f64 * f64::from(ITERS) * 8.0 * (16 * 8 * 32 * 2) as f64;
    Ok(ops / (ms / 1e3) / 1e12)
}
