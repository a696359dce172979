//! The OpenCL backend: the same network shape as the CPU backend, run by OpenCL C 1.2 kernels
//! (kernels/opencl/*.cl, built at run time for the chosen device) — fused conv + bias + ReLU + pool +
//! requantization, global average pool, dense + bias + ReLU + requantization, heads. int8 is
//! bit-identical to the reference backend; fp32/fp16 agree within docs/NUMERICS.md's tolerance.
//! CI proves the kernels on PoCL, a CPU implementation of OpenCL.

pub mod binary;
mod compile;
mod plan;
pub mod runtime;

pub use runtime::Selection;

use std::fmt;
use std::str::FromStr;

use super::cpu::program::Program;
use super::{Backend, BackendKind, Device, Plan, Probe};
use crate::error::{Error, Result};
use crate::model::{Model, Precision};

/// Which form of the int8 kernels a plan runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelForm {
    /// One work-item per output value (kernels/opencl/int8.cl): what CPUs and GPUs run well.
    #[default]
    NdRange,
    /// One work-item looping over every value (hw/fpga/int8_swi.cl): the form FPGA compilers pipeline.
    SingleWorkItem,
}

impl fmt::Display for KernelForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelForm::NdRange => "ndrange",
            KernelForm::SingleWorkItem => "single-work-item",
        })
    }
}

impl FromStr for KernelForm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [KernelForm::NdRange, KernelForm::SingleWorkItem]
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown OpenCL kernel form {s:?} (expected ndrange or single-work-item)"))
    }
}

/// The OpenCL backend on the device `select` names.
#[derive(Debug, Clone, Default)]
pub struct OpenCl {
    pub select: Selection,
}

fn backend_err(reason: String) -> Error {
    Error::Backend { backend: "opencl".into(), reason }
}

/// Every OpenCL device here, and whether `select` names a usable one.
pub fn probe(select: &Selection) -> Probe {
    let unusable = |reason: String, devices| Probe {
        backend: BackendKind::Opencl,
        usable: false,
        reason: Some(reason),
        devices,
        selected: None,
    };
    let listed = match runtime::devices() {
        Ok(l) => l,
        Err(reason) => return unusable(reason, Vec::new()),
    };
    let devices = listed
        .iter()
        .map(|d| {
            let version = d.device.version().unwrap_or_default();
            let units = d.device.max_compute_units().unwrap_or(0);
            Device {
                index: d.index,
                name: d.name(),
                detail: format!("{}; {}; {version}; {units} compute units", d.platform, d.kind()),
            }
        })
        .collect();
    match select.pick() {
        Ok(d) => Probe { backend: BackendKind::Opencl, usable: true, reason: None, devices, selected: Some(d.index) },
        Err(reason) => unusable(reason, devices),
    }
}

impl Backend for OpenCl {
    fn kind(&self) -> BackendKind {
        BackendKind::Opencl
    }

    fn probe(&self) -> Probe {
        probe(&self.select)
    }

    fn supports(&self, model: &Model) -> std::result::Result<(), String> {
        if self.select.form == KernelForm::SingleWorkItem && model.precision() != Precision::Int8 {
            return Err(format!(
                "the single-work-item (FPGA) kernels are int8 only; this model is {}",
                model.precision()
            ));
        }
        Program::compile(model.graph(), &model.shapes).map(|_| ())
    }

    fn build(&self, model: &Model) -> Result<Box<dyn Plan>> {
        self.supports(model).map_err(backend_err)?;
        let program = Program::compile(model.graph(), &model.shapes).map_err(backend_err)?;
        let runtime = runtime::Runtime::open(self.select.pick().map_err(backend_err)?).map_err(backend_err)?;
        // An FPGA has no OpenCL C compiler at run time: its kernels come compiled offline.
        if self.select.binary.is_none() && !runtime.device.compiler_available().unwrap_or(true) {
            return Err(backend_err(format!(
                "{} has no OpenCL C compiler (an FPGA runs offline-compiled kernels): pass --fpga-binary FILE",
                runtime.label
            )));
        }
        // The requantization is 64-bit; `long` is optional in the embedded profile.
        if model.precision() == Precision::Int8 {
            let profile = runtime.device.profile().unwrap_or_default();
            let extensions = runtime.device.extensions().unwrap_or_default();
            if profile.contains("EMBEDDED") && !extensions.contains("cles_khr_int64") {
                return Err(backend_err(format!(
                    "{} has no 64-bit integers (embedded profile without cles_khr_int64), which int8 requantization needs",
                    runtime.label
                )));
            }
        }
        Ok(Box::new(plan::OpenclPlan::new(runtime, model, &program, self.select.binary.as_deref(), self.select.form)?))
    }
}

#[cfg(test)]
pub(crate) mod tests;
