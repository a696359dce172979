//! CUDA: device discovery through cudarc's dynamically loaded driver API, and the kernels of
//! kernels/cuda compiled by NVRTC ([`nvrtc`]). cudarc panics when libcuda or libnvrtc is missing, so
//! presence is checked first and absence becomes one line.

pub mod bench;
mod compile;
pub mod emulator;
mod gpu;
pub mod nvrtc;
mod plan;

use cudarc::driver::CudaContext;

use super::cpu::program::Program;
use super::{Backend, BackendKind, Device, Plan, Probe};
use crate::error::{Error, Result};
use crate::model::{Model, Precision};

fn backend_err(reason: String) -> Error {
    Error::Backend { backend: "cuda".into(), reason }
}

fn unusable(reason: String) -> Probe {
    Probe { backend: BackendKind::Cuda, usable: false, reason: Some(reason), devices: Vec::new(), selected: None }
}

/// Every GPU the driver finds, with `device` (`--device N`, default 0) selected when it exists.
pub fn probe(device: usize) -> Probe {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made if it is absent.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return unusable("no CUDA driver library (libcuda.so) found".into());
    }
    let count = match std::panic::catch_unwind(CudaContext::device_count) {
        Ok(Ok(n)) => n.max(0) as usize,
        Ok(Err(e)) => return unusable(format!("the CUDA driver reports: {e}")),
        Err(_) => return unusable("the CUDA driver library could not be loaded".into()),
    };
    if count == 0 {
        return unusable("the CUDA driver found no GPU".into());
    }
    let devices = (0..count)
        .map(|i| match describe(i) {
            Ok((name, detail)) => Device { index: i, name, detail },
            Err(e) => Device { index: i, name: "unavailable GPU".into(), detail: e.to_string() },
        })
        .collect();
    if device >= count {
        return Probe {
            reason: Some(format!("no GPU {device}: the CUDA driver found {count}")),
            ..unusable_with(devices)
        };
    }
    // Plans compile their kernels with NVRTC; without it nothing can run, whatever the GPUs.
    if let Err(reason) = nvrtc::available() {
        return Probe { reason: Some(reason), ..unusable_with(devices) };
    }
    Probe { backend: BackendKind::Cuda, usable: true, reason: None, devices, selected: Some(device) }
}

/// GPU `i`'s name and "compute capability X.Y, N GiB", from device queries that create no context
/// (a context costs time and memory on every GPU, some perhaps another user's).
fn describe(i: usize) -> std::result::Result<(String, String), cudarc::driver::DriverError> {
    use cudarc::driver::result::device;
    use cudarc::driver::sys::CUdevice_attribute as A;
    cudarc::driver::result::init()?;
    let dev = device::get(i as i32)?;
    let name = device::get_name(dev)?;
    // SAFETY: `dev` came from device::get.
    let (major, minor, bytes) = unsafe {
        (
            device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            device::get_attribute(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            device::total_mem(dev)?,
        )
    };
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok((name, format!("compute capability {major}.{minor}, {gib:.1} GiB")))
}

fn unusable_with(devices: Vec<Device>) -> Probe {
    Probe { devices, ..unusable(String::new()) }
}

/// The CUDA backend on GPU `device`, or with `emulate` ("sm_NN") on the host emulation of the
/// kernels ([`emulator`]), for tests on machines without a GPU.
#[derive(Debug, Clone, Default)]
pub struct Cuda {
    pub device: usize,
    /// Host threads encoding inputs.
    pub threads: usize,
    pub emulate: Option<String>,
}

/// The kernel source a model's precision runs.
fn source_for(model: &Model) -> &'static nvrtc::Source {
    match model.precision() {
        Precision::Int8 => &nvrtc::SOURCES[0],
        Precision::Fp32 | Precision::Fp16 => &nvrtc::SOURCES[1],
    }
}

impl Backend for Cuda {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn probe(&self) -> Probe {
        match &self.emulate {
            Some(arch) => Probe {
                backend: BackendKind::Cuda,
                usable: true,
                reason: None,
                devices: vec![Device { index: 0, name: format!("emulated {arch}"), detail: "on the host".into() }],
                selected: Some(0),
            },
            None => probe(self.device),
        }
    }

    fn supports(&self, model: &Model) -> std::result::Result<(), String> {
        Program::compile(model.graph(), &model.shapes).map(|_| ())
    }

    fn build(&self, model: &Model) -> Result<Box<dyn Plan>> {
        let program = Program::compile(model.graph(), &model.shapes).map_err(backend_err)?;
        if let Some(arch) = &self.emulate {
            let gpu = emulator::Emulator::open(source_for(model), arch)?;
            let arch = gpu.arch();
            return Ok(Box::new(plan::CudaPlan::new(gpu, arch, model, &program, self.threads)?));
        }
        if let Some(reason) = self.probe().reason {
            return Err(backend_err(reason));
        }
        // cudarc resolves each driver and NVRTC function when first called and panics when the
        // loaded library lacks it (a driver older than the CUDA 12.8 API it binds); that is a reason
        // to refuse the backend, not to crash.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let gpu = gpu::Driver::open(self.device, source_for(model))?;
            let arch = gpu.arch()?;
            plan::CudaPlan::new(gpu, arch, model, &program, self.threads)
        }))
        .map_err(|_| backend_err("the CUDA driver or NVRTC library lacks a function ltvx needs (too old?)".into()))??;
        Ok(Box::new(built))
    }
}
