//! What a plan needs of a GPU: buffers, copies and kernel launches. The CUDA driver ([`Driver`],
//! through cudarc) provides them on a real GPU; the host emulation of the kernels
//! ([`super::emulator::Emulator`]) on a machine without one, so that the plan code and every kernel
//! run in the test suite everywhere.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::backend_err;
use super::nvrtc::{self, Source};
use crate::error::{Error, Result};

/// Dynamic shared memory a block may have without opting in (48 KiB on every architecture).
pub(crate) const SHARED_LIMIT: usize = 48 * 1024;

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
    /// Bytes of device memory free now.
    fn free_bytes(&self) -> Result<usize>;
    fn alloc_zeroed(&self, bytes: usize) -> Result<Self::Buffer>;
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buffer>;
    /// Copies `bytes` to the start of `dst`.
    fn write(&self, bytes: &[u8], dst: &mut Self::Buffer) -> Result<()>;
    /// The whole of `src`, once every launch before it has finished.
    fn read(&self, src: &Self::Buffer) -> Result<Vec<u8>>;
    /// Queues kernel `name`; the arguments must match its declaration in kernels/cuda (checked
    /// against the declarations by the compile tests; nothing checks them at run time).
    fn launch(&self, name: &str, grid: Grid, args: &[Arg<'_, Self::Buffer>]) -> Result<()>;
}

pub(crate) fn driver_err(what: &str, e: impl std::fmt::Display) -> Error {
    backend_err(format!("{what}: {e}"))
}

/// One CUDA device through the driver API, with one module of kernels and one stream.
pub(crate) struct Driver {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    label: String,
}

impl Driver {
    /// Compiles `source` for device `device`'s architecture (through the PTX cache) and loads it.
    pub(crate) fn open(device: usize, source: &Source) -> Result<Driver> {
        let ctx = CudaContext::new(device).map_err(|e| driver_err(&format!("GPU {device}"), e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().map_err(|e| driver_err("compute capability", e))?;
        // dp4a (every int8 kernel) needs compute capability 6.1.
        if (major, minor) < (6, 1) {
            return Err(backend_err(format!(
                "GPU {device} ({name}) has compute capability {major}.{minor}; ltvx's CUDA kernels need 6.1 or later"
            )));
        }
        let arch = format!("sm_{major}{minor}");
        let ptx = nvrtc::compile_cached(source, &arch).map_err(backend_err)?;
        let module = ctx.load_module(Ptx::from_src(ptx)).map_err(|e| driver_err(&format!("loading {arch} PTX"), e))?;
        let functions = nvrtc::kernels(source)
            .into_iter()
            .map(|k| module.load_function(&k.name).map(|f| (k.name.clone(), f)).map_err(|e| driver_err(&k.name, e)))
            .collect::<Result<HashMap<_, _>>>()?;
        let stream = ctx.default_stream();
        Ok(Driver { ctx, stream, functions, label: format!("GPU {device}: {name}, {arch}") })
    }

    /// The device's compute capability as an architecture number (e.g. 90).
    pub(crate) fn arch(&self) -> Result<u32> {
        let (major, minor) = self.ctx.compute_capability().map_err(|e| driver_err("compute capability", e))?;
        Ok((major * 10 + minor) as u32)
    }
}

impl Gpu for Driver {
    type Buffer = CudaSlice<u8>;

    fn describe(&self) -> String {
        self.label.clone()
    }

    fn free_bytes(&self) -> Result<usize> {
        self.ctx.mem_get_info().map(|(free, _)| free).map_err(|e| driver_err("free device memory", e))
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.stream.alloc_zeros::<u8>(bytes).map_err(|e| driver_err("allocating device memory", e))
    }

    fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        self.stream.clone_htod(bytes).map_err(|e| driver_err("uploading weights", e))
    }

    fn write(&self, bytes: &[u8], dst: &mut CudaSlice<u8>) -> Result<()> {
        let mut view = dst.slice_mut(0..bytes.len());
        self.stream.memcpy_htod(bytes, &mut view).map_err(|e| driver_err("copying inputs", e))
    }

    fn read(&self, src: &CudaSlice<u8>) -> Result<Vec<u8>> {
        let v = self.stream.clone_dtoh(src).map_err(|e| driver_err("copying results", e))?;
        // Copies into pageable memory complete before returning, but say so rather than rely on it.
        self.stream.synchronize().map_err(|e| driver_err("copying results", e))?;
        Ok(v)
    }

    fn launch(&self, name: &str, grid: Grid, args: &[Arg<'_, CudaSlice<u8>>]) -> Result<()> {
        let function = self.functions.get(name).ok_or_else(|| backend_err(format!("no kernel {name} loaded")))?;
        let mut launch = self.stream.launch_builder(function);
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
}
