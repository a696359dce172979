//! A model on one CUDA device: the kernels of kernels/cuda compiled by NVRTC for the device's
//! architecture (PTX cached on disk), the weights uploaded once when the plan is built, and per batch
//! the inputs encoded on the host (int8: quantized to u8 per docs/NUMERICS.md A), copied in, the
//! launches run in order on one stream, and the heads' outputs (i32 accumulators or f32 logits) copied
//! back for the shared host epilogue. A batch runs in parts when its buffers would not fit in half of
//! the device memory free at the time, so a large batch is split rather than running out of memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::backend_err;
use super::compile::{Compiled, compile};
use super::nvrtc;
use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Input, SEQ_SLOT, Step, StepArg, in_parts, read_outputs};
use crate::backend::{BackendKind, Plan, Trace};
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::Result;
use crate::model::{Model, Precision};

/// Threads per block: every kernel is one thread per output value with no shared memory, so any
/// multiple of the warp size works; 256 keeps several blocks per multiprocessor.
const BLOCK: u32 = 256;

pub struct CudaPlan {
    label: String,
    precision: Precision,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: Vec<(&'static str, CudaFunction)>,
    consts: Vec<CudaSlice<u8>>,
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

fn driver_err(what: &str, e: impl std::fmt::Display) -> crate::error::Error {
    backend_err(format!("{what}: {e}"))
}

impl CudaPlan {
    pub fn new(device: usize, model: &Model, p: &Program) -> Result<CudaPlan> {
        let ctx = CudaContext::new(device).map_err(|e| driver_err(&format!("GPU {device}"), e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_err("compute capability", e))?;
        // dp4a (every int8 kernel) needs compute capability 6.1.
        if (major, minor) < (6, 1) {
            return Err(backend_err(format!(
                "GPU {device} ({name}) has compute capability {major}.{minor}; ltvx's CUDA kernels need 6.1 or later"
            )));
        }
        let arch = format!("sm_{major}{minor}");
        let stream = ctx.default_stream();
        let Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding } = compile(model, p)?;
        let source = match model.precision() {
            Precision::Int8 => &nvrtc::SOURCES[0],
            Precision::Fp32 | Precision::Fp16 => &nvrtc::SOURCES[1],
        };
        let ptx = nvrtc::compile_cached(source, &arch).map_err(backend_err)?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| driver_err(&format!("loading {arch} PTX"), e))?;
        let functions = kernels
            .into_iter()
            .map(|k| module.load_function(k).map(|f| (k, f)).map_err(|e| driver_err(k, e)))
            .collect::<Result<Vec<_>>>()?;
        let consts = consts
            .iter()
            .map(|c| stream.clone_htod(c.as_slice()).map_err(|e| driver_err("uploading weights", e)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CudaPlan {
            label: format!("GPU {device}: {name}, {arch}"),
            precision: model.precision(),
            ctx,
            stream,
            functions,
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
    fn part_rows(&self) -> Result<usize> {
        let (free, _total) = self.ctx.mem_get_info().map_err(|e| driver_err("free device memory", e))?;
        let per_row: usize = self.slots.iter().sum::<usize>().max(1);
        let rows = free / 2 / per_row;
        if rows == 0 {
            return Err(backend_err(format!("{}: no device memory free for one customer", self.label)));
        }
        Ok(rows)
    }

    /// Scores `batch` in parts that fit the device, joined in order.
    fn scored(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        let mut runs =
            self.runs.lock().map_err(|_| backend_err("an earlier run panicked while holding the device".into()))?;
        in_parts(batch, self.part_rows()?, trace, |part, trace| {
            *runs += 1;
            self.execute(part, trace)
        })
    }

    /// One sequence of launches over `batch` (one part).
    fn execute(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        let rows = batch.len();
        if rows == 0 {
            let empty =
                |h: &Head| if h.acc { HeadValues::Accumulators(Vec::new()) } else { HeadValues::Logits(Vec::new()) };
            let [ltv, churn, segment] = &self.heads;
            return Ok(HeadOutputs { ltv: empty(ltv), churn: empty(churn), segment: empty(segment) });
        }
        let s = &self.stream;
        // Zeroed: the concatenated row's pooled part is written by a kernel, its static part by the
        // copy below, and nothing may be left undefined if a model has neither.
        let mut bufs = self
            .slots
            .iter()
            .map(|&row| s.alloc_zeros::<u8>(rows * row))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| driver_err("allocating batch buffers", e))?;
        let seq = self.encoding.bytes(batch.seq(), Input::Seq);
        s.memcpy_htod(&seq, &mut bufs[SEQ_SLOT]).map_err(|e| driver_err("copying inputs", e))?;
        if self.static_features > 0 {
            let (slot, width, offset) = self.concat;
            let bytes = self.encoding.concat_rows(batch, width, offset, self.static_features);
            s.memcpy_htod(&bytes, &mut bufs[slot]).map_err(|e| driver_err("copying inputs", e))?;
        }
        for step in &self.steps {
            let (name, function) = &self.functions[step.kernel];
            let total = rows * step.per_row.iter().product::<usize>();
            let total_arg = total as i64;
            let ints: Vec<i32> =
                step.args.iter().filter_map(|a| if let StepArg::Int(v) = a { Some(*v) } else { None }).collect();
            let mut ints_left = ints.iter();
            let mut launch = s.launch_builder(function);
            launch.arg(&total_arg);
            for a in &step.args {
                match a {
                    StepArg::Slot(i) => launch.arg(&bufs[*i]),
                    StepArg::Const(i) => launch.arg(&self.consts[*i]),
                    StepArg::Int(_) => launch.arg(ints_left.next().expect("one value per Int argument")),
                };
            }
            let grid = u32::try_from(total.div_ceil(BLOCK as usize))
                .map_err(|_| backend_err(format!("{name}: {total} outputs exceed one grid")))?;
            let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments are pushed in the order and with the types of the kernel's
            // signature in kernels/cuda (an i64 count, then the step's buffers and i32 values), and
            // every buffer holds `rows` rows of the size the kernel indexes.
            unsafe { launch.launch(cfg) }.map_err(|e| driver_err(name, e))?;
        }
        read_outputs(&self.heads, &self.boundaries, &self.slots, trace, |slot| {
            let v = s.clone_dtoh(&bufs[slot]).map_err(|e| driver_err("copying results", e))?;
            // Copies into pageable memory complete before returning, but say so rather than rely on it.
            s.synchronize().map_err(|e| driver_err("copying results", e))?;
            Ok(v)
        })
    }
}

impl Plan for CudaPlan {
    fn backend(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn describe(&self) -> String {
        let runs = self.runs.lock().map(|r| *r).unwrap_or_default();
        format!("cuda ({}; {}; {} run{})", self.precision, self.label, runs, if runs == 1 { "" } else { "s" })
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
