//! CUDA: device discovery through cudarc's dynamically loaded driver API, and the kernels of
//! kernels/cuda compiled by NVRTC ([`nvrtc`]). cudarc panics when libcuda or libnvrtc is missing, so
//! presence is checked first and absence becomes one line.

pub mod nvrtc;

use cudarc::driver::CudaContext;

use super::{BackendKind, Device, Probe};

fn unusable(reason: String) -> Probe {
    Probe { backend: BackendKind::Cuda, usable: false, reason: Some(reason), devices: Vec::new(), selected: None }
}

pub fn probe() -> Probe {
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
        .map(|i| match CudaContext::new(i) {
            Ok(ctx) => {
                let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
                let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
                let mem = ctx.total_mem().map(|b| b as f64 / (1u64 << 30) as f64).unwrap_or(0.0);
                Device { index: i, name, detail: format!("compute capability {major}.{minor}, {mem:.1} GiB") }
            }
            Err(e) => Device { index: i, name: "unavailable GPU".into(), detail: e.to_string() },
        })
        .collect();
    Probe { backend: BackendKind::Cuda, usable: true, reason: None, devices, selected: None }
}
