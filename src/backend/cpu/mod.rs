//! The fast CPU backend: the network compiled once into fused stages (conv + bias + ReLU + pool +
//! requantize, dense + bias + ReLU + requantize, heads), weights packed per instruction-set family
//! (AVX-512 VNNI, AVX2, portable; see KERNELS.md), and a batch split across threads by rows.
//! int8 is bit-identical to the reference backend; fp32/fp16 agree within docs/NUMERICS.md's tolerance.

mod avx2;
mod float;
pub(crate) mod int8;
pub mod isa;
mod pipeline;
pub(crate) mod program;
mod vnni;

use std::collections::BTreeMap;
use std::ops::Range;

pub use isa::Isa;
use pipeline::{HeadSlice, Stages};
use program::Program;

use super::{Backend, BackendKind, Device, Plan, Probe, Trace};
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::{Error, Result};
use crate::model::{Model, Precision};

/// Rows below which another thread costs more than it saves.
pub const MIN_ROWS_PER_THREAD: usize = 64;

/// The SIMD extensions the int8 / fp16 / fp32 kernels care about, as detected at run time.
pub fn isa_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        for (name, present) in [
            ("avx512vnni", has!("avx512vnni")),
            ("avx512bw", has!("avx512bw")),
            ("avx512f", has!("avx512f")),
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("f16c", has!("f16c")),
        ] {
            if present {
                found.push(name);
            }
        }
    }
    found
}

pub fn probe() -> Probe {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let features = isa_features();
    let mut p = Probe { backend: BackendKind::Cpu, usable: true, reason: None, devices: Vec::new(), selected: None };
    let kernels = match Isa::from_env() {
        Ok(forced) => forced.unwrap_or_else(Isa::best).to_string(),
        Err(reason) => {
            p.usable = false;
            p.reason = Some(reason);
            "none".into()
        }
    };
    let detail = format!(
        "{} on {threads} hardware threads; ISA: {}; kernels: {kernels}",
        std::env::consts::ARCH,
        if features.is_empty() { "portable only".to_string() } else { features.join(", ") }
    );
    p.devices.push(Device { index: 0, name: "host CPU".into(), detail });
    p
}

/// The CPU backend with its settings: the kernel family (`None`: `LTVX_CPU_ISA`, else the best
/// available) and the threads one batch is split across.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub isa: Option<Isa>,
    pub threads: usize,
}

impl Default for Cpu {
    fn default() -> Self {
        Cpu { isa: None, threads: 1 }
    }
}

impl Cpu {
    fn isa(&self) -> std::result::Result<Isa, String> {
        match self.isa {
            Some(isa) => isa.require(),
            None => Isa::from_env().map(|forced| forced.unwrap_or_else(Isa::best)),
        }
    }
}

impl Backend for Cpu {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn probe(&self) -> Probe {
        let mut p = probe();
        if let (true, Err(reason)) = (p.usable, self.isa()) {
            p.usable = false;
            p.reason = Some(reason);
        }
        p
    }

    fn supports(&self, model: &Model) -> std::result::Result<(), String> {
        Program::compile(model.graph(), &model.shapes).map(|_| ())
    }

    fn build(&self, model: &Model) -> Result<Box<dyn Plan>> {
        let backend_err = |reason: String| Error::Backend { backend: "cpu".into(), reason };
        let isa = self.isa().map_err(backend_err)?;
        let program = Program::compile(model.graph(), &model.shapes).map_err(backend_err)?;
        let threads = self.threads.max(1);
        let precision = model.precision();
        Ok(match precision {
            Precision::Int8 => {
                let stages = int8::Int8Stages::new(isa, model, &program);
                Box::new(CpuPlan { program, stages, isa, threads, precision })
            }
            Precision::Fp32 | Precision::Fp16 => {
                let stages = float::FloatStages::new(isa, model, &program);
                Box::new(CpuPlan { program, stages, isa, threads, precision })
            }
        })
    }
}

/// Every fused kernel of `model` packed for `isa`, each callable on its own buffers (benches/cpu.rs).
pub fn kernel_calls(model: &Model, isa: Isa) -> Result<Vec<pipeline::KernelCall>> {
    let backend_err = |reason: String| Error::Backend { backend: "cpu".into(), reason };
    let isa = isa.require().map_err(backend_err)?;
    let program = std::sync::Arc::new(Program::compile(model.graph(), &model.shapes).map_err(backend_err)?);
    Ok(match model.precision() {
        Precision::Int8 => {
            pipeline::kernel_calls(std::sync::Arc::new(int8::Int8Stages::new(isa, model, &program)), program)
        }
        _ => pipeline::kernel_calls(std::sync::Arc::new(float::FloatStages::new(isa, model, &program)), program),
    })
}

struct CpuPlan<S> {
    program: Program,
    stages: S,
    isa: Isa,
    threads: usize,
    precision: Precision,
}

impl<S: Stages> CpuPlan<S> {
    /// Output buffers for `rows` customers, one per head.
    fn outputs(&self, rows: usize) -> [HeadValues; 3] {
        std::array::from_fn(|h| {
            let n = rows * self.program.heads[h].1;
            if self.stages.head_is_acc(h) {
                HeadValues::Accumulators(vec![0; n])
            } else {
                HeadValues::Logits(vec![0.0; n])
            }
        })
    }

    fn scored(&self, batch: &Batch, trace: Option<&mut BTreeMap<String, Vec<u8>>>) -> HeadOutputs {
        let rows = batch.len();
        let mut heads = self.outputs(rows);
        let slices = heads.each_mut().map(|h| match h {
            HeadValues::Accumulators(v) => HeadSlice::Acc(v),
            HeadValues::Logits(v) => HeadSlice::Logits(v),
        });
        let threads = self.threads.min(rows / MIN_ROWS_PER_THREAD).max(1);
        if threads == 1 {
            pipeline::run_rows(&self.stages, &self.program, batch, 0..rows, slices, trace);
        } else {
            self.in_threads(batch, threads, slices, trace);
        }
        let [ltv, churn, segment] = heads;
        HeadOutputs { ltv, churn, segment }
    }

    /// Splits the rows into `threads` contiguous parts, each scored on its own thread (the calling
    /// thread takes the first) into its own rows of the outputs; traces are joined in row order.
    fn in_threads(
        &self,
        batch: &Batch,
        threads: usize,
        slices: [HeadSlice; 3],
        trace: Option<&mut BTreeMap<String, Vec<u8>>>,
    ) {
        let rows = batch.len();
        let widths = self.program.heads.clone().map(|h| h.1);
        let mut rest = slices.map(Some);
        let mut jobs = Vec::with_capacity(threads);
        for i in 0..threads {
            let part = rows * i / threads..rows * (i + 1) / threads;
            let mine = std::array::from_fn(|h| {
                let (a, b) = rest[h].take().expect("rows left").split(part.len(), widths[h]);
                rest[h] = Some(b);
                a
            });
            jobs.push((part, mine, trace.is_some().then(BTreeMap::new)));
        }
        let traced = std::thread::scope(|scope| {
            let run = |(range, out, mut t): Job| {
                pipeline::run_rows(&self.stages, &self.program, batch, range, out, t.as_mut());
                t
            };
            let mut jobs = jobs.into_iter();
            let first = jobs.next().expect("at least one part");
            let others: Vec<_> = jobs.map(|job| scope.spawn(move || run(job))).collect();
            let mut traced = vec![run(first)];
            traced.extend(others.into_iter().map(|h| h.join().expect("a scoring thread panicked")));
            traced
        });
        if let Some(all) = trace {
            for part in traced.into_iter().flatten() {
                for (name, values) in part {
                    all.entry(name).or_default().extend(values);
                }
            }
        }
    }
}

/// One thread's rows, its outputs and its trace.
type Job<'a> = (Range<usize>, [HeadSlice<'a>; 3], Option<BTreeMap<String, Vec<u8>>>);

impl<S: Stages + Send> Plan for CpuPlan<S> {
    fn backend(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!(
            "cpu ({}; {} kernels, {} thread{})",
            self.precision,
            self.isa,
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn run(&self, batch: &Batch) -> Result<HeadOutputs> {
        Ok(self.scored(batch, None))
    }

    fn trace(&self, batch: &Batch) -> Result<Trace> {
        let mut boundaries = BTreeMap::new();
        let heads = self.scored(batch, Some(&mut boundaries));
        Ok(Trace { boundaries, heads })
    }

    fn executed_macs(&self) -> Option<u64> {
        Some(
            self.program
                .layer_macs()
                .iter()
                .zip(self.stages.densities())
                .map(|(&m, d)| (m as f64 * d).round() as u64)
                .sum(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::block_prune::BlockShape;
    use crate::model::init::{InitOptions, init};

    /// 75 % of 16×4 blocks pruned: the VNNI and AVX2 plans skip them (only the heads stay dense); the
    /// portable family executes every multiply-add.
    #[test]
    fn block_sparse_layers_skip_their_zero_blocks_on_vnni() {
        let block = Some(BlockShape { rows: 16, cols: 4 });
        let opts = InitOptions {
            preset: crate::model::Preset::Base,
            precision: Precision::Int8,
            seed: 1,
            sparsity: 0.75,
            inputs: None,
            block,
        };
        let model = init(&opts).unwrap().into_model().unwrap();
        for isa in Isa::available_all() {
            let plan = Cpu { isa: Some(isa), threads: 1 }.build(&model).unwrap();
            let executed = plan.executed_macs().unwrap();
            if isa != Isa::Portable {
                let share = executed as f64 / model.macs() as f64;
                assert!((0.24..0.26).contains(&share), "{isa}: executes {share} of the multiply-adds");
            } else {
                assert_eq!(executed, model.macs(), "{isa}");
            }
        }
    }
}
