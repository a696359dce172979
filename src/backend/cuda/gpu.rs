//! What a plan needs of a GPU: buffers, copies and kernel launches, on one of [`LANES`] queues. The
//! CUDA driver ([`Driver`], through cudarc) provides them on a real GPU, a lane being a stream; the
//! host emulation of the kernels ([`super::emulator::Emulator`]) on a machine without one, where
//! every call completes in order, so that the plan code and every kernel run in the test suite
//! everywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg, result, sys,
};
use cudarc::nvrtc::Ptx;

use super::backend_err;
use super::nvrtc::{self, Source};
use crate::backend::launch::Input;
use crate::error::{Error, Result};

/// Dynamic shared memory a block may have without opting in (48 KiB on every architecture).
pub(crate) const SHARED_DEFAULT: usize = 48 * 1024;

/// The kernels that take their tiles' inputs in dynamic shared memory, and may opt in to more.
const TILED_KERNELS: [&str; 2] = ["conv_mma_u8", "convs_mma_u8"];

/// Queues work may run on concurrently: the plan alternates parts of a large batch between them so
/// that one part's copies overlap another's kernels.
pub(crate) const LANES: usize = 2;

/// Host inputs a lane stages per part: the sequence and the static features.
const INPUTS: usize = 2;

/// Where `input`'s staging buffer is among a lane's.
fn staging_index(input: Input) -> usize {
    match input {
        Input::Seq => 0,
        Input::Static => 1,
    }
}

/// A kernel argument, in the order of the kernel's parameters.
pub(crate) enum Arg<'a, B> {
    Buffer(&'a B),
    I32(i32),
    I64(i64),
}

/// A launch: `blocks` of `threads`, each with `shared_bytes` of dynamic shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    pub(crate) blocks: u32,
    pub(crate) threads: u32,
    pub(crate) shared_bytes: u32,
}

pub(crate) trait Gpu: Send + Sync {
    type Buffer: Send + Sync;
    /// One line: the device and the architecture its kernels were compiled for.
    fn describe(&self) -> String;
    /// The architecture as a number (e.g. 90 for sm_90): tensor cores from 80, dp4a before.
    fn arch(&self) -> u32;
    /// Bytes of device memory free now.
    fn free_bytes(&self) -> Result<usize>;
    /// Dynamic shared memory a tiled kernel's block may use.
    fn shared_limit(&self) -> usize;
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Buffer>;
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buffer>;
    /// Queues a copy of `bytes` bytes to the start of `dst` on `lane`, which `fill` writes into the
    /// lane's staging buffer for `input` first (page-locked on a GPU: the host encodes straight into it,
    /// and the copy is asynchronous).
    fn write(
        &self,
        lane: usize,
        input: Input,
        bytes: usize,
        dst: &mut Self::Buffer,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()>;
    /// The first `bytes` bytes of `src`, once everything queued on `lane` before has finished.
    fn read(&self, lane: usize, src: &Self::Buffer, bytes: usize) -> Result<Vec<u8>>;
    /// Queues kernel `name` on `lane`; the arguments must match its declaration in kernels/cuda
    /// (checked against the declarations by the compile tests; nothing checks them at run time).
    fn launch(&self, lane: usize, name: &str, grid: Grid, args: &[Arg<'_, Self::Buffer>]) -> Result<()>;
    /// Queues on `lane` what `record` queues there: on a GPU as a CUDA graph recorded the first time
    /// for `key` and replayed after (one submission instead of a launch per kernel), elsewhere
    /// directly. `record` must queue the same work every time for the same key.
    fn replay(&self, lane: usize, key: (usize, u64), record: &mut dyn FnMut() -> Result<()>) -> Result<()>;
    /// Waits until nothing queued on any lane is still running: before buffers are freed (their
    /// frees are not ordered with the other lane's work) and after a failed run.
    fn idle(&self) -> Result<()>;
}

pub(crate) fn driver_err(what: &str, e: impl std::fmt::Display) -> Error {
    backend_err(format!("{what}: {e}"))
}

/// The CUDA driver's version, e.g. "13.0".
pub(crate) fn driver_version() -> String {
    let mut v = 0;
    // SAFETY: only called once the driver library is loaded; the pointer is to a live local.
    let status = unsafe { sys::cuDriverGetVersion(&mut v) };
    if status == sys::CUresult::CUDA_SUCCESS {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    } else {
        format!("unknown ({status:?})")
    }
}

/// Page-locked host memory, with the event of the last copy to or from it (the host must not touch
/// it before that copy has completed).
pub(crate) struct Pinned {
    ptr: *mut u8,
    len: usize,
    copied: CudaEvent,
}

// SAFETY: an owned page-locked allocation; users wait for `copied` before touching it.
unsafe impl Send for Pinned {}

impl Pinned {
    pub(crate) fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Pinned> {
        // The raw driver calls below act on the thread's current context.
        ctx.bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        // SAFETY: a plain page-locked allocation of at least one byte, freed in drop.
        let ptr = unsafe { result::malloc_host(bytes.max(1), 0) }.map_err(|e| driver_err("page-locked memory", e))?;
        let copied = ctx.new_event(None).map_err(|e| driver_err("creating an event", e))?;
        Ok(Pinned { ptr: ptr as *mut u8, len: bytes.max(1), copied })
    }

    /// The first `bytes` bytes, once the last copy to or from them has completed.
    pub(crate) fn bytes_mut(&mut self, bytes: usize) -> Result<&mut [u8]> {
        assert!(bytes <= self.len, "past the end of page-locked memory");
        self.copied.synchronize().map_err(|e| driver_err("waiting for a copy", e))?;
        // SAFETY: the allocation holds len ≥ bytes bytes and no copy uses it now.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.ptr, bytes) })
    }

    /// Queues a copy of the first `bytes` bytes to the start of `dst` on `stream`.
    pub(crate) fn copy_to(&mut self, bytes: usize, dst: &mut CudaSlice<u8>, stream: &Arc<CudaStream>) -> Result<()> {
        assert!(bytes <= self.len && bytes <= dst.len(), "a copy past the end of a buffer");
        stream.context().bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        let (ptr, _written) = dst.device_ptr_mut(stream);
        // SAFETY: both sides hold `bytes`; the host side is page-locked and untouched until
        // `copied`, recorded next, has completed.
        let host = unsafe { std::slice::from_raw_parts(self.ptr, bytes) };
        unsafe { result::memcpy_htod_async(ptr, host, stream.cu_stream()) }.map_err(|e| driver_err("copying in", e))?;
        self.copied.record(stream).map_err(|e| driver_err("recording a copy", e))
    }

    /// Queues a copy of the first `bytes` bytes of `src` into this memory on `stream`.
    pub(crate) fn copy_from(&mut self, bytes: usize, src: &CudaSlice<u8>, stream: &Arc<CudaStream>) -> Result<()> {
        assert!(bytes <= self.len && bytes <= src.len(), "a copy past the end of a buffer");
        stream.context().bind_to_thread().map_err(|e| driver_err("binding the context", e))?;
        let (ptr, _read) = src.device_ptr(stream);
        // SAFETY: as in copy_to, the other way.
        let host = unsafe { std::slice::from_raw_parts_mut(self.ptr, bytes) };
        unsafe { result::memcpy_dtoh_async(host, ptr, stream.cu_stream()) }
            .map_err(|e| driver_err("copying out", e))?;
        self.copied.record(stream).map_err(|e| driver_err("recording a copy", e))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host; a copy still using it is waited for first.
        let _ = self.copied.synchronize();
        let _ = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// Recorded launch sequences, by (lane, key), at most this many (then they are recorded afresh).
const GRAPHS: usize = 128;

/// A recorded CUDA graph.
struct Recorded(CudaGraph);

// SAFETY: a graph is used only under the driver's `graphs` mutex, never by two threads at once.
unsafe impl Send for Recorded {}

/// Ends a stream's capture if what is being recorded panics, so that the stream stays usable.
struct Capturing<'a>(&'a Arc<CudaStream>);

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        let _ = self.0.end_capture(sys::CUgraphInstantiate_flags(0));
    }
}

#[derive(Default)]
struct Graphs {
    by_key: HashMap<(usize, usize, u64), Recorded>,
    /// Why recording failed once: launches then go directly, for good.
    failed: Option<String>,
}

/// One CUDA device through the driver API, with one module of kernels and a stream per lane.
pub(crate) struct Driver {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) streams: [Arc<CudaStream>; LANES],
    /// Before `functions`: recorded graphs name the module's kernels, so they go first.
    graphs: Mutex<Graphs>,
    functions: HashMap<String, CudaFunction>,
    staging: [Mutex<[Option<Pinned>; INPUTS]>; LANES],
    shared_limit: usize,
    arch: u32,
    label: String,
}

impl Driver {
    /// Compiles `source` for device `device`'s architecture (through the PTX cache) and loads it.
    pub(crate) fn open(device: usize, source: &Source) -> Result<Driver> {
        let ctx = CudaContext::new(device).map_err(|e| driver_err(&format!("GPU {device}"), e))?;
        // cudarc would record and wait for an event per buffer argument of every launch to order
        // streams; the plan orders them itself (each lane's buffers are used on that lane only,
        // weights and fresh buffers are complete before any lane sees them, staging buffers have
        // their own events), so those per-launch events would only add latency.
        // SAFETY: see above: no buffer is used on two streams without a synchronisation between.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_err("compute capability", e))?;
        // dp4a (the int8 kernels below sm_80, and the heads everywhere) needs compute capability 6.1.
        if (major, minor) < (6, 1) {
            return Err(backend_err(format!(
                "GPU {device} ({name}) has compute capability {major}.{minor}; ltvx's CUDA kernels need 6.1 or later"
            )));
        }
        let sm = format!("sm_{major}{minor}");
        let ptx = nvrtc::compile_cached(source, &sm).map_err(backend_err)?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| {
            if e.0 == sys::cudaError_enum::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                let nvrtc = nvrtc::version().unwrap_or_else(|e| e);
                backend_err(format!(
                    "the CUDA driver ({}) cannot load PTX from NVRTC {nvrtc}, which is newer: use an NVRTC no newer \
                     than the driver",
                    driver_version()
                ))
            } else {
                driver_err(&format!("loading {sm} PTX"), e)
            }
        })?;
        let functions = nvrtc::kernels(source)
            .into_iter()
            .map(|k| module.load_function(&k.name).map(|f| (k.name.clone(), f)).map_err(|e| driver_err(&k.name, e)))
            .collect::<Result<HashMap<_, _>>>()?;
        let stream = || ctx.new_stream().map_err(|e| driver_err("creating a stream", e));
        let streams = [stream()?, stream()?];
        let staging = std::array::from_fn(|_| Mutex::new([None, None]));
        let shared_limit = opt_in_shared(&ctx, &functions);
        let label = format!("GPU {device}: {name}, {sm}");
        let arch = (major * 10 + minor) as u32;
        Ok(Driver { ctx, streams, graphs: Mutex::default(), functions, staging, shared_limit, arch, label })
    }

    /// An event with timing recorded on `lane` now.
    pub(crate) fn mark(&self, lane: usize) -> Result<CudaEvent> {
        let event = self.event()?;
        event.record(&self.streams[lane]).map_err(|e| driver_err("recording an event", e))?;
        Ok(event)
    }

    /// An event with timing, not yet recorded.
    pub(crate) fn event(&self) -> Result<CudaEvent> {
        self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| driver_err("creating an event", e))
    }

    /// The staging buffer in `slot` (one of a lane's), grown to hold at least `bytes`.
    fn staging<'a>(&self, slot: &'a mut Option<Pinned>, bytes: usize) -> Result<&'a mut Pinned> {
        if slot.as_ref().is_none_or(|s| s.len < bytes) {
            *slot = None;
            *slot = Some(Pinned::new(&self.ctx, bytes)?);
        }
        Ok(slot.as_mut().expect("allocated above"))
    }
}

/// Opts the tiled kernels in to the device's largest dynamic shared memory per block (227 KiB on
/// Hopper, 163 KiB on Ampere A100) and returns it; the default 48 KiB where the device or the driver
/// refuses.
fn opt_in_shared(ctx: &Arc<CudaContext>, functions: &HashMap<String, CudaFunction>) -> usize {
    let most = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_or(0, |v| v.max(0) as usize);
    if most <= SHARED_DEFAULT {
        return SHARED_DEFAULT;
    }
    let attribute = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
    let opted = TILED_KERNELS
        .iter()
        .filter_map(|name| functions.get(*name))
        .all(|f| f.set_attribute(attribute, most as i32).is_ok());
    if opted { most } else { SHARED_DEFAULT }
}

impl Gpu for Driver {
    type Buffer = CudaSlice<u8>;

    fn shared_limit(&self) -> usize {
        self.shared_limit
    }

    fn arch(&self) -> u32 {
        self.arch
    }

    fn describe(&self) -> String {
        match self.graphs.lock().ok().and_then(|g| g.failed.clone()) {
            Some(why) => format!("{}; no CUDA graphs ({why})", self.label),
            None => self.label.clone(),
        }
    }

    fn free_bytes(&self) -> Result<usize> {
        self.ctx.mem_get_info().map(|(free, _)| free).map_err(|e| driver_err("free device memory", e))
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        let stream = &self.streams[0];
        let buf = stream.alloc_zeros::<u8>(bytes.max(1)).map_err(|e| driver_err("allocating device memory", e))?;
        // Zeroed before any lane uses it (cudarc's own cross-stream tracking is off, see `open`).
        stream.synchronize().map_err(|e| driver_err("allocating device memory", e))?;
        Ok(buf)
    }

    fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        let stream = &self.streams[0];
        let buf = stream.clone_htod(bytes).map_err(|e| driver_err("uploading weights", e))?;
        stream.synchronize().map_err(|e| driver_err("uploading weights", e))?;
        Ok(buf)
    }

    fn write(
        &self,
        lane: usize,
        input: Input,
        bytes: usize,
        dst: &mut CudaSlice<u8>,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        let mut lane_staging =
            self.staging[lane].lock().map_err(|_| backend_err("a staging buffer was poisoned".into()))?;
        let staging = self.staging(&mut lane_staging[staging_index(input)], bytes)?;
        fill(staging.bytes_mut(bytes)?);
        staging.copy_to(bytes, dst, &self.streams[lane])
    }

    fn read(&self, lane: usize, src: &CudaSlice<u8>, bytes: usize) -> Result<Vec<u8>> {
        let stream = &self.streams[lane];
        let v = stream.clone_dtoh(&src.slice(0..bytes)).map_err(|e| driver_err("copying results", e))?;
        // Copies into pageable memory complete before returning, but say so rather than rely on it.
        stream.synchronize().map_err(|e| driver_err("copying results", e))?;
        Ok(v)
    }

    fn launch(&self, lane: usize, name: &str, grid: Grid, args: &[Arg<'_, CudaSlice<u8>>]) -> Result<()> {
        let function = self.functions.get(name).ok_or_else(|| backend_err(format!("no kernel {name} loaded")))?;
        let mut launch = self.streams[lane].launch_builder(function);
        for a in args {
            match a {
                Arg::Buffer(b) => launch.arg(*b),
                Arg::I32(v) => launch.arg(v),
                Arg::I64(v) => launch.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.blocks, 1, 1),
            block_dim: (grid.threads, 1, 1),
            shared_mem_bytes: grid.shared_bytes,
        };
        // SAFETY: the arguments are in the order and of the types of the kernel's declaration
        // (the plan builds them from the compiled steps, whose lists are checked against the
        // declarations in src/backend/cuda/compile.rs's tests), and every buffer holds the rows the
        // kernel indexes.
        unsafe { launch.launch(cfg) }.map_err(|e| driver_err(name, e))?;
        Ok(())
    }

    fn idle(&self) -> Result<()> {
        self.streams.iter().try_for_each(|s| s.synchronize().map_err(|e| driver_err("waiting for the GPU", e)))
    }

    fn replay(&self, lane: usize, key: (usize, u64), record: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let mut graphs = self.graphs.lock().map_err(|_| backend_err("the graph cache was poisoned".into()))?;
        if graphs.failed.is_some() {
            return record();
        }
        let k = (lane, key.0, key.1);
        if let Some(g) = graphs.by_key.get(&k) {
            return g.0.launch().map_err(|e| driver_err("replaying a graph", e));
        }
        if graphs.by_key.len() >= GRAPHS {
            graphs.by_key.clear();
        }
        let stream = &self.streams[lane];
        // Relaxed: other threads' CUDA calls (another plan's allocations) stay legal meanwhile.
        if let Err(e) = stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) {
            graphs.failed = Some(format!("capture: {e}"));
            return record();
        }
        let capturing = Capturing(stream);
        let recorded = record();
        std::mem::forget(capturing);
        let captured = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        match (recorded, captured) {
            (Ok(()), Ok(Some(graph))) => {
                graph.launch().map_err(|e| driver_err("launching a graph", e))?;
                graphs.by_key.insert(k, Recorded(graph));
                Ok(())
            }
            // Nothing was queued while capturing: the launches' own error stands.
            (Err(e), _) => Err(e),
            // The capture came to nothing: run the launches directly, now and from now on.
            (Ok(()), captured) => {
                let why = captured.err().map_or_else(|| "nothing captured".to_string(), |e| e.to_string());
                graphs.failed = Some(format!("capture: {why}"));
                record()
            }
        }
    }
}
