//! Backends: the reference oracle, and the device probes of the accelerated backends.
//!
//! A backend reports what it is and whether it is usable here, declares what it supports, and builds
//! a [`Plan`] — weights packed for it — that runs batches. `auto` picks the fastest usable one.

pub mod cpu;
pub mod cuda;
mod launch;
pub mod opencl;
pub mod reference;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::engine::{Batch, HeadOutputs};
use crate::error::{Error, Result};
use crate::model::Model;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Reference,
    Cpu,
    Cuda,
    Opencl,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] =
        [BackendKind::Reference, BackendKind::Cpu, BackendKind::Cuda, BackendKind::Opencl];
    /// The order `auto` tries them in: fastest first.
    const BY_SPEED: [BackendKind; 4] =
        [BackendKind::Cuda, BackendKind::Cpu, BackendKind::Opencl, BackendKind::Reference];
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Opencl => "opencl",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Kind(BackendKind),
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(BackendChoice::Auto);
        }
        BackendKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .map(BackendChoice::Kind)
            .ok_or_else(|| format!("unknown backend {s:?} (expected auto, reference, cpu, cuda or opencl)"))
    }
}

/// A device a backend found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub index: usize,
    pub name: String,
    pub detail: String,
}

/// What a backend found on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probe {
    pub backend: BackendKind,
    pub usable: bool,
    /// Why it is not usable, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub devices: Vec<Device>,
    /// The device plans would run on, where the backend has a choice (`--device`, `--opencl-platform`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<usize>,
}

/// A model prepared for one backend.
pub trait Plan: Send + Sync {
    fn backend(&self) -> BackendKind;
    fn describe(&self) -> String;
    /// Raw head outputs for a batch; the engine's shared epilogue turns them into scores.
    fn run(&self, batch: &Batch) -> Result<HeadOutputs>;
    /// The debug plan: u8 tensors at every fusion boundary (int8 models), and the head outputs.
    fn trace(&self, batch: &Batch) -> Result<Trace>;
    /// Multiply-adds per customer the plan executes, where it skips zero blocks (`None`: all of them).
    fn executed_macs(&self) -> Option<u64> {
        None
    }
}

/// What a debug run exposes, for `==` comparisons between backends.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Fusion-boundary tensor → `[B, …]` u8 values (empty for float models).
    pub boundaries: BTreeMap<String, Vec<u8>>,
    pub heads: HeadOutputs,
}

pub trait Backend {
    fn kind(&self) -> BackendKind;
    fn probe(&self) -> Probe;
    /// `Err(reason)` when this backend cannot run the model (an op or precision it lacks).
    fn supports(&self, model: &Model) -> std::result::Result<(), String>;
    fn build(&self, model: &Model) -> Result<Box<dyn Plan>>;
}

/// How plans are built: threads per batch, for the CPU backend a forced kernel family, for the
/// OpenCL backend the device.
#[derive(Debug, Clone)]
pub struct Options {
    pub threads: usize,
    /// `None`: `LTVX_CPU_ISA` if set, else the best the CPU has.
    pub cpu_isa: Option<cpu::Isa>,
    pub opencl: opencl::Selection,
    /// `Some("sm_NN")`: the CUDA backend runs its kernels in the host emulation of that
    /// architecture (src/backend/cuda/emulator.rs; needs a C++ compiler), for tests without a GPU.
    pub cuda_emulation: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { threads: 1, cpu_isa: None, opencl: opencl::Selection::default(), cuda_emulation: None }
    }
}

/// The backends this build can run models on.
fn implemented(kind: BackendKind, options: &Options) -> Box<dyn Backend> {
    match kind {
        BackendKind::Reference => Box::new(reference::Reference),
        BackendKind::Cpu => Box::new(cpu::Cpu { isa: options.cpu_isa, threads: options.threads }),
        BackendKind::Opencl => Box::new(opencl::OpenCl { select: options.opencl.clone() }),
        // `--device N` is one option for both device backends; it is carried in the OpenCL selection.
        BackendKind::Cuda => {
            let device = options.opencl.device.unwrap_or(0);
            Box::new(cuda::Cuda { device, threads: options.threads, emulate: options.cuda_emulation.clone() })
        }
    }
}

/// What `kind` finds here, with the device `options` select.
pub fn probe(kind: BackendKind, options: &Options) -> Probe {
    implemented(kind, options).probe()
}

pub fn probe_all(options: &Options) -> Vec<Probe> {
    BackendKind::ALL.into_iter().map(|k| probe(k, options)).collect()
}

/// A plan on the chosen backend, or a one-line reason why that backend cannot run this model here.
pub fn build_plan(model: &Model, choice: BackendChoice, options: &Options) -> Result<Box<dyn Plan>> {
    let kinds: Vec<BackendKind> = match choice {
        BackendChoice::Kind(k) => vec![k],
        BackendChoice::Auto => BackendKind::BY_SPEED.to_vec(),
    };
    let mut last = None;
    for kind in kinds {
        let b = implemented(kind, options);
        let p = b.probe();
        if !p.usable {
            last = Some(Error::Backend { backend: kind.to_string(), reason: p.reason.unwrap_or_default() });
            continue;
        }
        if let Err(reason) = b.supports(model) {
            last = Some(Error::Backend { backend: kind.to_string(), reason });
            continue;
        }
        return b.build(model);
    }
    Err(last.expect("at least one backend was tried"))
}
