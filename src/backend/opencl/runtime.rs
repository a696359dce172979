//! The OpenCL runtime under the backend: platforms and devices as `ltvx devices` lists them, the
//! choice of one (`--device N`, `--opencl-platform NAME`), its context and one in-order profiling
//! queue, program builds that carry the build log into the error, byte buffers, and kernel launches
//! whose events are timed (kernel time and transfer time kept apart).
//!
//! The ICD loader is opened at run time (opencl3 `dynamic`), so a machine without OpenCL gets a
//! one-line reason from [`devices`] and never a panic.

use std::ffi::c_void;
use std::path::PathBuf;
use std::ptr;
use std::sync::{Mutex, MutexGuard};

use opencl3::command_queue::{CL_QUEUE_PROFILING_ENABLE, CommandQueue};
use opencl3::context::Context;
use opencl3::device::{CL_DEVICE_TYPE_ACCELERATOR, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_GPU, Device as ClDevice};
use opencl3::error_codes::CL_PLATFORM_NOT_FOUND_KHR;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE, ClMem};
use opencl3::platform::get_platforms;
use opencl3::program::Program as ClProgram;
use opencl3::types::{CL_BLOCKING, cl_mem};

use super::KernelForm;

/// What the OpenCL backend runs on: `device` is the index `ltvx devices` prints; `platform` a
/// case-insensitive part of a platform's name (neither: the first device listed); `binary` an
/// offline-compiled program for it (an FPGA's), instead of kernels/opencl built from source; `form`
/// the shape of the int8 kernels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub device: Option<usize>,
    pub platform: Option<String>,
    pub binary: Option<PathBuf>,
    pub form: KernelForm,
}

/// A device with the platform it belongs to, at its index in the listing.
pub struct Listed {
    pub index: usize,
    pub platform: String,
    pub device: ClDevice,
}

impl Listed {
    pub fn name(&self) -> String {
        self.device.name().map(|n| n.trim().to_string()).unwrap_or_else(|_| "unknown device".into())
    }

    pub fn kind(&self) -> &'static str {
        match self.device.dev_type().unwrap_or(0) {
            t if t & CL_DEVICE_TYPE_ACCELERATOR != 0 => "accelerator",
            t if t & CL_DEVICE_TYPE_GPU != 0 => "GPU",
            _ => "CPU",
        }
    }
}

/// Held while platforms are listed, contexts made and programs built. PoCL 3.1 crashed (in
/// clGetDeviceInfo) when one thread queried a device while another listed the platforms; these calls
/// are rare and cheap to serialise, while launches on different contexts stay concurrent.
static SETUP: Mutex<()> = Mutex::new(());

fn setup() -> MutexGuard<'static, ()> {
    // The guard protects no data, so a panic elsewhere while holding it leaves nothing inconsistent.
    SETUP.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every device of every platform, in the order `ltvx devices` shows (and `--device` counts) them.
pub fn devices() -> Result<Vec<Listed>, String> {
    let _setup = setup();
    if !cl3::is_opencl_runtime_available() {
        return Err("no OpenCL runtime (libOpenCL.so) found".into());
    }
    let platforms = match get_platforms() {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => return Err("the OpenCL loader found no platform (no ICD installed)".into()),
        // The loader's answer when no vendor ICD is registered (/etc/OpenCL/vendors, OCL_ICD_VENDORS).
        Err(e) if e.0 == CL_PLATFORM_NOT_FOUND_KHR => {
            return Err(format!("the OpenCL loader found no platform (no ICD installed; {e})"));
        }
        Err(e) => return Err(format!("OpenCL platforms could not be listed: {e}")),
    };
    let mut listed = Vec::new();
    for p in &platforms {
        let platform = p.name().map(|n| n.trim().to_string()).unwrap_or_else(|_| "unknown platform".into());
        for id in p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default() {
            listed.push(Listed { index: listed.len(), platform: platform.clone(), device: ClDevice::new(id) });
        }
    }
    if listed.is_empty() {
        return Err("OpenCL platforms found, but no devices".into());
    }
    Ok(listed)
}

impl Selection {
    /// The device this selection names, or why there is none.
    pub fn pick(&self) -> Result<Listed, String> {
        let all = devices()?;
        let platforms = || {
            let mut names: Vec<&str> = all.iter().map(|d| d.platform.as_str()).collect();
            names.dedup();
            names.join(", ")
        };
        let on_platform =
            |d: &Listed| self.platform.as_ref().is_none_or(|p| d.platform.to_lowercase().contains(&p.to_lowercase()));
        if let Some(p) = &self.platform
            && !all.iter().any(on_platform)
        {
            return Err(format!("no OpenCL platform matches {p:?} (platforms here: {})", platforms()));
        }
        let found = match self.device {
            Some(i) => {
                let count = all.len();
                let d = all
                    .into_iter()
                    .nth(i)
                    .ok_or_else(|| format!("no OpenCL device {i}: {count} listed (see `ltvx devices`)"))?;
                if !on_platform(&d) {
                    return Err(format!(
                        "OpenCL device {i} is on platform {:?}, not {:?}",
                        d.platform,
                        self.platform.as_deref().unwrap_or("")
                    ));
                }
                d
            }
            None => all.into_iter().find(on_platform).expect("a matching platform has a device"),
        };
        if !found.device.available().unwrap_or(false) {
            return Err(format!("OpenCL device {} ({}) is not available", found.index, found.name()));
        }
        Ok(found)
    }
}

/// What a command was, for the profile.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Kernel,
    Transfer,
}

/// Device time of the commands enqueued so far, from their profiling events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Profile {
    pub runs: u64,
    pub kernel_ns: u64,
    pub transfer_ns: u64,
}

/// One device's context and in-order queue with profiling on.
pub struct Runtime {
    pub device: ClDevice,
    pub label: String,
    context: Context,
    queue: CommandQueue,
}

/// A kernel argument: a buffer or a 32-bit integer.
pub enum Arg<'a> {
    Mem(&'a Buffer<u8>),
    Int(i32),
}

impl Runtime {
    pub fn open(listed: Listed) -> Result<Runtime, String> {
        let _setup = setup();
        let label = format!("[{}] {} ({}, {})", listed.index, listed.name(), listed.platform, listed.kind());
        let context = Context::from_device(&listed.device).map_err(|e| format!("OpenCL context on {label}: {e}"))?;
        // SAFETY: the device is the one the context was made for.
        #[allow(deprecated)] // clCreateCommandQueue is the OpenCL 1.2 call; FPGA runtimes still speak 1.2
        let queue = unsafe { CommandQueue::create(&context, listed.device.id(), CL_QUEUE_PROFILING_ENABLE) }
            .map_err(|e| format!("OpenCL queue on {label}: {e}"))?;
        Ok(Runtime { device: listed.device, label, context, queue })
    }

    /// Builds OpenCL C sources (concatenated in order); a failed build's error carries the build log.
    pub fn build(&self, what: &str, sources: &[&str], options: &str) -> Result<ClProgram, String> {
        // Joined here: cl3 0.13.2 passes a slice of several `&str` (fat pointers) to
        // clCreateProgramWithSource as if it were an array of C pointers, which only one source survives.
        let source = sources.concat();
        let _setup = setup();
        ClProgram::create_and_build_from_source(&self.context, &source, options)
            .map_err(|e| format!("building {what} for {}: {e}", self.label))
    }

    /// Loads an offline-compiled program binary for this device (an FPGA's `.aocx` / `.xclbin`).
    pub fn build_binary(&self, what: &str, bytes: &[u8]) -> Result<ClProgram, String> {
        let id = self.device.id();
        let _setup = setup();
        // SAFETY: the context was made for exactly this device, and there is one binary for it (cl3
        // passes the binaries' slice the way it passes sources, which is right for one only).
        let mut program = unsafe { ClProgram::create_from_binary(&self.context, &[id], &[bytes]) }
            .map_err(|e| format!("loading {what} on {}: {e}", self.label))?;
        program.build(&[id], "").map_err(|e| {
            let log = program.get_build_log(id).unwrap_or_default();
            format!("building {what} for {}: {e}, build log: {log}", self.label)
        })?;
        Ok(program)
    }

    pub fn kernel(&self, program: &ClProgram, name: &str) -> Result<Kernel, String> {
        Kernel::create(program, name).map_err(|e| format!("kernel {name}: {e}"))
    }

    /// A read-only device copy of `bytes` (weights, biases, requantization parameters).
    pub fn constant(&self, bytes: &[u8]) -> Result<Buffer<u8>, String> {
        // OpenCL has no empty buffers; a zero-length tensor is never read, one byte stands in for it.
        let one = [0u8];
        let data = if bytes.is_empty() { &one[..] } else { bytes };
        // SAFETY: COPY_HOST_PTR only reads `data.len()` bytes from the pointer during the call.
        unsafe {
            Buffer::<u8>::create(
                &self.context,
                CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                data.len(),
                data.as_ptr() as *mut c_void,
            )
        }
        .map_err(|e| format!("OpenCL buffer of {} bytes: {e}", data.len()))
    }

    /// An uninitialised device buffer of at least one byte.
    pub fn scratch(&self, bytes: usize) -> Result<Buffer<u8>, String> {
        // SAFETY: no host pointer is given.
        unsafe { Buffer::<u8>::create(&self.context, CL_MEM_READ_WRITE, bytes.max(1), ptr::null_mut()) }
            .map_err(|e| format!("OpenCL buffer of {bytes} bytes: {e}"))
    }

    pub fn write(&self, buf: &mut Buffer<u8>, data: &[u8], events: &mut Vec<(Work, Event)>) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: a blocking write of `data`, which outlives the call, into a buffer at least as large.
        let e = unsafe { self.queue.enqueue_write_buffer(buf, CL_BLOCKING, 0, data, &[]) }
            .map_err(|e| format!("OpenCL write: {e}"))?;
        events.push((Work::Transfer, e));
        Ok(())
    }

    pub fn read(&self, buf: &Buffer<u8>, data: &mut [u8], events: &mut Vec<(Work, Event)>) -> Result<(), String> {
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: a blocking read into `data`; the in-order queue has finished every earlier command.
        let e = unsafe { self.queue.enqueue_read_buffer(buf, CL_BLOCKING, 0, data, &[]) }
            .map_err(|e| format!("OpenCL read: {e}"))?;
        events.push((Work::Transfer, e));
        Ok(())
    }

    /// Sets `args` on `kernel` and enqueues it over `global` work-items (nothing when any is 0), in
    /// work-groups of `local` (`None`: the runtime's choice).
    pub fn launch(
        &self,
        kernel: &Kernel,
        name: &str,
        args: &[Arg],
        global: &[usize],
        local: Option<&[usize]>,
        events: &mut Vec<(Work, Event)>,
    ) -> Result<(), String> {
        for (i, a) in args.iter().enumerate() {
            // SAFETY: each argument is a live cl_mem or an i32, the types the kernels declare in this order.
            let set = unsafe {
                match a {
                    Arg::Mem(b) => kernel.set_arg(i as u32, &(b.get() as cl_mem)),
                    Arg::Int(v) => kernel.set_arg(i as u32, v),
                }
            };
            set.map_err(|e| format!("kernel {name} argument {i}: {e}"))?;
        }
        if global.contains(&0) {
            return Ok(());
        }
        if local.is_some_and(|l| l.len() != global.len()) {
            return Err(format!("kernel {name}: work-group of {local:?} for {global:?} work-items"));
        }
        let local = local.map_or(ptr::null(), |l| l.as_ptr());
        // SAFETY: every argument is set; `global` (and `local`, when given) have `global.len()` (≤ 3) entries.
        let e = unsafe {
            self.queue.enqueue_nd_range_kernel(
                kernel.get(),
                global.len() as u32,
                ptr::null(),
                global.as_ptr(),
                local,
                &[],
            )
        }
        .map_err(|e| format!("kernel {name} on {global:?} work-items: {e}"))?;
        events.push((Work::Kernel, e));
        Ok(())
    }

    /// Waits for the queue and adds the events' device time to `profile`.
    pub fn settle(&self, events: Vec<(Work, Event)>, profile: &mut Profile) -> Result<(), String> {
        self.queue.finish().map_err(|e| format!("OpenCL queue: {e}"))?;
        for (work, e) in events {
            let ns = match (e.profiling_command_start(), e.profiling_command_end()) {
                (Ok(s), Ok(end)) => end.saturating_sub(s),
                _ => 0,
            };
            match work {
                Work::Kernel => profile.kernel_ns += ns,
                Work::Transfer => profile.transfer_ns += ns,
            }
        }
        profile.runs += 1;
        Ok(())
    }
}
