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

use self::gpu::Gpu;
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

/// Runs one tensor-core `mma` on pseudo-random matrices on GPU `device` (or, with `emulate`, in the
/// host emulation) and compares every element with the product computed here: a direct check of
/// the fragment layout the int8 kernels rely on, with the differing elements named when it fails.
/// For a GPU host's first run (tests/cuda_kernels.rs), before the whole conformance suite.
/// `Ok(false)`: the GPU has no int8 `mma` (before sm_80; its int8 kernels are dp4a), nothing to check.
pub fn check_tensor_cores(device: usize, emulate: Option<&str>) -> std::result::Result<bool, String> {
    let source = &nvrtc::SOURCES[0];
    match emulate {
        Some(arch) => mma_check(&emulator::Emulator::open(source, arch).map_err(|e| e.to_string())?).map(|()| true),
        None => {
            if let Some(reason) = probe(device).reason {
                return Err(reason);
            }
            guarded(|| {
                let gpu = gpu::Driver::open(device, source)?;
                Ok(if gpu.arch() < 80 { Ok(false) } else { mma_check(&gpu).map(|()| true) })
            })
            .map_err(|e| e.to_string())?
        }
    }
}

fn mma_check<G: Gpu>(gpu: &G) -> std::result::Result<(), String> {
    let mut rng = crate::rng::Rng::new(2026);
    let a: Vec<u8> = (0..16 * 32).map(|_| rng.next_u64() as u8).collect();
    let b: Vec<u8> = (0..8 * 32).map(|_| rng.next_u64() as u8).collect();
    let err = |e: Error| e.to_string();
    let (da, db) = (gpu.upload(&a).map_err(err)?, gpu.upload(&b).map_err(err)?);
    let dd = gpu.alloc_zeroed(16 * 8 * 4).map_err(err)?;
    let args = [gpu::Arg::I64(32), gpu::Arg::Buffer(&da), gpu::Arg::Buffer(&db), gpu::Arg::Buffer(&dd)];
    let grid = gpu::Grid { blocks: 1, threads: 32, shared_bytes: 0 };
    gpu.launch(0, "mma_fragments_u8", grid, &args).map_err(err)?;
    let got: Vec<i32> = bytemuck::pod_collect_to_vec(&gpu.read(0, &dd, 16 * 8 * 4).map_err(err)?);
    let wrong: Vec<String> = (0..16)
        .flat_map(|i| (0..8).map(move |n| (i, n)))
        .filter_map(|(i, n)| {
            let want: i32 = (0..32).map(|k| a[i * 32 + k] as i32 * b[n * 32 + k] as i8 as i32).sum();
            (got[i * 8 + n] != want).then(|| format!("d[{i}][{n}] = {} (want {want})", got[i * 8 + n]))
        })
        .collect();
    match wrong.len() {
        0 => Ok(()),
        n => Err(format!("{n} of 128 mma results differ from the product: {}", wrong[..n.min(8)].join(", "))),
    }
}

/// Runs `f`, whose driver calls may panic, with a panic turned into the backend's one-line error:
/// cudarc resolves each driver and NVRTC function when first called and panics when the loaded
/// library lacks it (a driver older than the CUDA 12.8 API it binds), a reason to refuse the
/// backend, not to crash.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| backend_err("the CUDA driver or NVRTC library lacks a function ltvx needs (too old?)".into()))?
}

/// A plan for `model` on GPU `device`, its kernels compiled for the device's architecture.
fn driver_plan(device: usize, model: &Model, program: &Program, threads: usize) -> Result<plan::CudaPlan<gpu::Driver>> {
    plan::CudaPlan::new(gpu::Driver::open(device, source_for(model))?, model, program, threads)
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
            return Ok(Box::new(plan::CudaPlan::new(gpu, model, &program, self.threads)?));
        }
        if let Some(reason) = self.probe().reason {
            return Err(backend_err(reason));
        }
        Ok(Box::new(guarded(|| driver_plan(self.device, model, &program, self.threads))?))
    }
}
