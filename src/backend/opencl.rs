//! OpenCL platform and device discovery through opencl3 (the ICD loader is loaded at run time).

use opencl3::device::{CL_DEVICE_TYPE_ALL, Device as ClDevice};
use opencl3::platform::get_platforms;

use super::{BackendKind, Device, Probe};

fn unusable(reason: String) -> Probe {
    Probe { backend: BackendKind::Opencl, usable: false, reason: Some(reason), devices: Vec::new() }
}

pub fn probe() -> Probe {
    if !cl3::is_opencl_runtime_available() {
        return unusable("no OpenCL runtime (libOpenCL.so) found".into());
    }
    let platforms = match get_platforms() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => return unusable("the OpenCL loader found no platform (no ICD installed)".into()),
        Err(e) => return unusable(format!("OpenCL platforms could not be listed: {e}")),
    };
    let mut devices = Vec::new();
    for p in &platforms {
        let platform = p.name().unwrap_or_else(|_| "unknown platform".into());
        for id in p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default() {
            let d = ClDevice::new(id);
            let name = d.name().unwrap_or_else(|_| "unknown device".into());
            let units = d.max_compute_units().unwrap_or(0);
            let version = d.version().unwrap_or_default();
            devices.push(Device {
                index: devices.len(),
                name,
                detail: format!("{platform}; {version}; {units} compute units"),
            });
        }
    }
    if devices.is_empty() {
        return unusable("OpenCL platforms found, but no devices".into());
    }
    Probe { backend: BackendKind::Opencl, usable: true, reason: None, devices }
}
