//! A model on one OpenCL device: its compiled launches (compile.rs) run per batch over freshly sized
//! buffers on the one in-order queue. Inputs are encoded on the host (int8: quantized to u8 per
//! docs/NUMERICS.md A; floats: as they are), the static features placed straight into their part of
//! the concatenated row, and the heads' outputs (i32 accumulators or f32 logits) read back for the
//! shared host epilogue; the queue's events add up to the device time `describe()` reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use opencl3::kernel::Kernel;
use opencl3::memory::Buffer;

use super::compile::{BUILD_OPTIONS, Compiled, compile, sources};
use super::runtime::{Arg, Profile, Runtime};
use super::{KernelForm, backend_err};
use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Input, SEQ_SLOT, Step, StepArg, in_parts, read_outputs};
use crate::backend::{BackendKind, Plan, Trace};
use crate::engine::{Batch, HeadOutputs};
use crate::error::Result;
use crate::model::{Model, Precision};

/// Device state the launches mutate (kernel arguments), behind one lock: runs are serialised.
struct Device {
    kernels: Vec<(&'static str, Kernel)>,
    profile: Profile,
}

pub struct OpenclPlan {
    runtime: Runtime,
    precision: Precision,
    device: Mutex<Device>,
    consts: Vec<Buffer<u8>>,
    /// Bytes per customer of each slot.
    slots: Vec<usize>,
    /// Customers per launch sequence: the largest slot must fit one device allocation.
    chunk_rows: usize,
    form: KernelForm,
    steps: Vec<Step>,
    encoding: Encoding,
    /// The concatenated-features slot, its row width in elements and the static features' offset.
    concat: (usize, usize, usize),
    static_features: usize,
    boundaries: Vec<Boundary>,
    heads: [Head; 3],
}

impl OpenclPlan {
    /// Builds the kernels for `runtime`'s device from source, or loads `binary` (refused when it was
    /// compiled for another model).
    pub fn new(
        runtime: Runtime,
        model: &Model,
        p: &Program,
        binary: Option<&Path>,
        form: KernelForm,
    ) -> Result<OpenclPlan> {
        let precision = model.precision();
        let program = match binary {
            Some(path) => super::binary::load(&runtime, path).and_then(|prog| {
                super::binary::check_model(&runtime, &prog, &path.display().to_string(), model).map(|()| prog)
            }),
            None => {
                let (what, sources) = sources(precision, form);
                runtime.build(what, &sources, BUILD_OPTIONS)
            }
        }
        .map_err(backend_err)?;
        let Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding } =
            compile(&runtime, program, model, p)?;
        let max_alloc = runtime
            .device
            .max_mem_alloc_size()
            .map_err(|e| backend_err(format!("{}: CL_DEVICE_MAX_MEM_ALLOC_SIZE: {e}", runtime.label)))?;
        let widest = slots.iter().copied().max().unwrap_or(1).max(1) as u64;
        Ok(OpenclPlan {
            chunk_rows: usize::try_from(max_alloc / widest).unwrap_or(usize::MAX).max(1),
            form,
            precision,
            device: Mutex::new(Device { kernels, profile: Profile::default() }),
            consts,
            slots,
            steps,
            encoding,
            concat: (concat, p.concat_width(), p.concat_offsets().1),
            static_features: p.static_features,
            boundaries,
            heads,
            runtime,
        })
    }

    /// Scores `batch` in parts of at most `chunk_rows` customers, joined in order.
    fn scored(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        in_parts(batch, self.chunk_rows, trace, |part, trace| self.execute(part, trace))
    }

    /// One launch sequence over `batch` (at most `chunk_rows` customers); `trace` gets its boundaries
    /// appended.
    fn execute(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs> {
        let rows = batch.len();
        let rt = &self.runtime;
        let mut device =
            self.device.lock().map_err(|_| backend_err("an earlier run panicked while holding the device".into()))?;
        let Device { kernels, profile } = &mut *device;
        let mut events = Vec::new();
        let mut bufs = self
            .slots
            .iter()
            .map(|&row| rt.scratch(rows * row))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(backend_err)?;
        rt.write(&mut bufs[SEQ_SLOT], &self.encoding.bytes(batch.seq(), Input::Seq), &mut events)
            .map_err(backend_err)?;
        if self.static_features > 0 {
            let (slot, width, offset) = self.concat;
            let rows_bytes = self.encoding.concat_rows(batch, width, offset, self.static_features);
            rt.write(&mut bufs[slot], &rows_bytes, &mut events).map_err(backend_err)?;
        }
        for step in &self.steps {
            let mut args: Vec<Arg> = step
                .args
                .iter()
                .map(|a| match a {
                    StepArg::Slot(s) => Arg::Mem(&bufs[*s]),
                    StepArg::Const(c) => Arg::Mem(&self.consts[*c]),
                    StepArg::Int(v) => Arg::Int(*v),
                    StepArg::Tracing => Arg::Int(i32::from(trace.is_some())),
                })
                .collect();
            let counts: Vec<usize> = std::iter::once(rows).chain(step.per_row.iter().copied()).collect();
            let (global, local) = match self.form {
                KernelForm::NdRange => (counts, None),
                // One work-item (its kernels require a work-group of 1); the counts become the loop
                // bounds it takes as trailing arguments.
                KernelForm::SingleWorkItem => {
                    args.extend(counts.iter().map(|&n| Arg::Int(i32::try_from(n).unwrap_or(i32::MAX))));
                    (if counts.contains(&0) { vec![0] } else { vec![1] }, Some(&[1usize][..]))
                }
            };
            let (name, kernel) = &kernels[step.kernel];
            rt.launch(kernel, name, &args, &global, local, &mut events).map_err(backend_err)?;
        }
        let out = read_outputs(&self.heads, &self.boundaries, &self.slots, trace, |slot| {
            let mut v = vec![0u8; rows * self.slots[slot]];
            rt.read(&bufs[slot], &mut v, &mut events).map_err(backend_err)?;
            Ok(v)
        })?;
        rt.settle(events, profile).map_err(backend_err)?;
        Ok(out)
    }
}

impl Plan for OpenclPlan {
    fn backend(&self) -> BackendKind {
        BackendKind::Opencl
    }

    /// The device, and the device time of the runs so far (kernels and transfers apart).
    fn describe(&self) -> String {
        let p = self.device.lock().map(|d| d.profile).unwrap_or_default();
        format!(
            "opencl ({}; {} kernels; {}; {} run{}: kernels {:.3} ms, transfers {:.3} ms of device time)",
            self.precision,
            self.form,
            self.runtime.label,
            p.runs,
            if p.runs == 1 { "" } else { "s" },
            p.kernel_ns as f64 / 1e6,
            p.transfer_ns as f64 / 1e6
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::reference::ReferencePlan;
    use crate::data::synthetic;
    use crate::model::Preset;
    use crate::model::init::{InitOptions, init};

    /// A batch beyond one device allocation runs in parts, joined exactly as one run would be: the
    /// parts forced here to 3 customers, on a batch of 10 (int8, so `==`).
    #[test]
    fn batches_larger_than_an_allocation_run_in_parts() {
        let Some(rt) = crate::backend::opencl::tests::runtime() else { return };
        let opts = InitOptions {
            preset: Preset::Tiny,
            precision: Precision::Int8,
            seed: 4,
            sparsity: 0.0,
            inputs: None,
            block: None,
        };
        let model = init(&opts).unwrap().into_model().unwrap();
        let program = Program::compile(model.graph(), &model.shapes).unwrap();
        let mut plan = OpenclPlan::new(rt, &model, &program, None, KernelForm::NdRange).unwrap();
        plan.chunk_rows = 3;
        let batch = synthetic::customers(model.graph().inputs, 10, 5);
        assert!(plan.trace(&batch).unwrap() == ReferencePlan::new(&model).trace(&batch).unwrap());
        assert_eq!(plan.device.lock().unwrap().profile.runs, 4, "10 customers in parts of 3");
    }
}
