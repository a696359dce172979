//! The CUDA kernels run on the host, for machines without a GPU: kernels/cuda/emulation.hpp, then
//! a kernel source, then a table of its kernels, compiled by the system C++ compiler (`CXX`, else
//! `c++`) into a shared library that [`Emulator`] loads. A CUDA plan built on it runs the same
//! launches as on a GPU, so the conformance suite checks the plan code and every kernel, the
//! tensor-core fragments included, bit for bit against the reference (`Options::cuda_emulation`).
//!
//! It is a correctness tool, slow by design (the threads of a block are fibers switched at every
//! barrier and warp collective), and only as right as emulation.hpp's reading of the PTX ISA. Its
//! lanes are one queue: every call completes before it returns.

use std::collections::HashMap;
use std::ffi::{CString, c_char, c_uint, c_void};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use super::backend_err;
use super::gpu::{Arg, Gpu, Grid, SHARED_DEFAULT};
use super::nvrtc::{Source, kernels};
use crate::backend::launch::Input;
use crate::error::Result;

/// The emulated architectures: `sm_80` and later run the tensor-core kernels, earlier ones dp4a.
pub const ARCHS: [&str; 2] = ["sm_75", "sm_90"];

type LaunchFn = unsafe extern "C" fn(*const c_char, c_uint, c_uint, c_uint, *mut *mut c_void) -> i32;

/// `Err(one line)` when the kernels cannot be emulated here (no working C++ compiler).
pub fn available() -> std::result::Result<(), String> {
    super::nvrtc::SOURCES.iter().try_for_each(|s| library(s).map(|_| ()))
}

/// A compiled emulation of one kernel source; kept for the process, since compiling takes seconds.
struct Library {
    _lib: libloading::Library,
    launch: LaunchFn,
    _dir: tempfile::TempDir,
}

/// The emulation of `source`, compiled once per process.
fn library(source: &Source) -> std::result::Result<Arc<Library>, String> {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, Arc<Library>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().map_err(|_| "emulation cache poisoned".to_string())?;
    if let Some(lib) = built.get(source.name) {
        return Ok(lib.clone());
    }
    let lib = Arc::new(compile(source)?);
    built.insert(source.name, lib.clone());
    Ok(lib)
}

/// The C++ translation unit: the emulation, the kernels, and the launch entry over a table of them.
fn program(source: &Source) -> String {
    let table: Vec<String> = kernels(source).iter().map(|k| format!("    emu::entry(\"{0}\", {0}),", k.name)).collect();
    format!(
        "{}\n{}\nstatic const std::vector<emu::Entry> ltvx_kernels = {{\n{}\n}};\n\
         extern \"C\" int ltvx_emu_launch(const char* name, unsigned grid, unsigned threads, unsigned shared, \
         void** params) {{\n    return emu::launch(ltvx_kernels, name, grid, threads, shared, params);\n}}\n",
        include_str!("../../../kernels/cuda/emulation.hpp"),
        source.text,
        table.join("\n")
    )
}

fn compile(source: &Source) -> std::result::Result<Library, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a folder for the CUDA emulation: {e}"))?;
    let cpp = dir.path().join("emulation.cpp");
    let so = dir.path().join("emulation.so");
    std::fs::write(&cpp, program(source)).map_err(|e| format!("{}: {e}", cpp.display()))?;
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-shared", "-fPIC", "-w", "-o"])
        .arg(&so)
        .arg(&cpp)
        .output()
        .map_err(|e| format!("no C++ compiler for the CUDA emulation ({cxx}: {e})"))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{cxx} failed on the emulation of {}: {}", source.name, log.trim()));
    }
    load(&so).map(|(lib, launch)| Library { _lib: lib, launch, _dir: dir })
}

fn load(so: &Path) -> std::result::Result<(libloading::Library, LaunchFn), String> {
    // SAFETY: the library was just built from emulation.hpp and kernels/cuda; loading it runs only
    // the static initialisation of its kernel table.
    let lib = unsafe { libloading::Library::new(so) }.map_err(|e| format!("{}: {e}", so.display()))?;
    // SAFETY: `ltvx_emu_launch` is defined by `program` with exactly this signature.
    let launch = unsafe { lib.get::<LaunchFn>(b"ltvx_emu_launch") }.map_err(|e| e.to_string())?;
    let launch = *launch;
    Ok((lib, launch))
}

/// A device buffer of the emulation: host memory aligned like a CUDA allocation (256 bytes), so
/// that the kernels' word loads meet the same alignment as on a GPU.
pub(crate) struct Buffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain owned allocation; the plan serialises runs, and launches run on the caller's
// thread, so no two threads use one buffer at once.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

const ALIGN: usize = 256;

impl Buffer {
    fn zeroed(len: usize) -> Buffer {
        let layout = std::alloc::Layout::from_size_align(len.max(1), ALIGN).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Buffer { ptr, len }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len.max(1), ALIGN).expect("a valid layout");
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// The kernels of one source run on the host, standing for a GPU of architecture `arch`.
pub struct Emulator {
    lib: Arc<Library>,
    arch: u32,
}

impl Emulator {
    /// The emulation of `source` standing for `arch` (one of [`ARCHS`] or any "sm_NN").
    pub(crate) fn open(source: &Source, arch: &str) -> Result<Emulator> {
        let number = arch
            .strip_prefix("sm_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| backend_err(format!("unknown emulated architecture {arch:?} (expected sm_NN)")))?;
        Ok(Emulator { lib: library(source).map_err(backend_err)?, arch: number })
    }
}

impl Gpu for Emulator {
    type Buffer = Buffer;

    /// As the architecture lets a kernel opt in to: 227 KiB from sm_90, 163 KiB on sm_80, 99 KiB on
    /// sm_86, sm_87 and sm_89, 64 KiB on sm_75, the default 48 KiB before.
    fn shared_limit(&self) -> usize {
        1024 * match self.arch {
            90.. => 227,
            80 => 163,
            86 | 87 | 89 => 99,
            75 => 64,
            _ => return SHARED_DEFAULT,
        }
    }

    fn describe(&self) -> String {
        format!("emulated sm_{} on the host", self.arch)
    }

    fn arch(&self) -> u32 {
        self.arch
    }

    fn free_bytes(&self) -> Result<usize> {
        Ok(1 << 30)
    }

    fn alloc_zeroed(&self, bytes: usize) -> Result<Buffer> {
        Ok(Buffer::zeroed(bytes))
    }

    fn upload(&self, bytes: &[u8]) -> Result<Buffer> {
        let mut b = Buffer::zeroed(bytes.len());
        self.write(0, Input::Seq, bytes.len(), &mut b, &mut |staging| staging.copy_from_slice(bytes))?;
        Ok(b)
    }

    fn write(
        &self,
        _lane: usize,
        _input: Input,
        bytes: usize,
        dst: &mut Buffer,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<()> {
        assert!(bytes <= dst.len, "a copy past the end of a buffer");
        let mut staging = vec![0u8; bytes];
        fill(&mut staging);
        // SAFETY: dst holds at least `bytes` bytes (asserted) and does not overlap `staging`.
        unsafe { std::ptr::copy_nonoverlapping(staging.as_ptr(), dst.ptr, bytes) };
        Ok(())
    }

    fn read(&self, _lane: usize, src: &Buffer, bytes: usize) -> Result<Vec<u8>> {
        assert!(bytes <= src.len, "a read past the end of a buffer");
        // SAFETY: src owns len ≥ bytes initialised bytes (allocated zeroed).
        Ok(unsafe { std::slice::from_raw_parts(src.ptr, bytes) }.to_vec())
    }

    fn replay(&self, _lane: usize, _key: (usize, u64), record: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        record()
    }

    fn idle(&self) -> Result<()> {
        Ok(())
    }

    fn launch(&self, _lane: usize, name: &str, grid: Grid, args: &[Arg<'_, Buffer>]) -> Result<()> {
        // What a GPU would refuse, refused here too: more shared memory per block than the
        // architecture allows a kernel that opted in, or more threads per block.
        if grid.shared_bytes as usize > self.shared_limit() || grid.threads > 1024 || grid.threads == 0 {
            return Err(backend_err(format!(
                "{name}: a launch of {} threads with {} bytes of shared memory per block",
                grid.threads, grid.shared_bytes
            )));
        }
        // One value per parameter, then a pointer to each, as cuLaunchKernel takes them.
        enum Value {
            Pointer(*mut u8),
            I32(i32),
            I64(i64),
        }
        let mut values: Vec<Value> = args
            .iter()
            .map(|a| match a {
                Arg::Buffer(b) => Value::Pointer(b.ptr),
                Arg::I32(v) => Value::I32(*v),
                Arg::I64(v) => Value::I64(*v),
            })
            .collect();
        let mut params: Vec<*mut c_void> = values
            .iter_mut()
            .map(|v| match v {
                Value::Pointer(p) => p as *mut *mut u8 as *mut c_void,
                Value::I32(v) => v as *mut i32 as *mut c_void,
                Value::I64(v) => v as *mut i64 as *mut c_void,
            })
            .collect();
        let c_name = CString::new(name).map_err(|_| backend_err(format!("kernel name {name:?}")))?;
        // SAFETY: the parameters match the kernel's declaration (as on a GPU, checked by the
        // compile tests) and point at `values`, alive for the call; buffers hold what the kernel
        // indexes. The call runs the whole grid before returning.
        let status = unsafe {
            (self.lib.launch)(c_name.as_ptr(), grid.blocks, grid.threads, grid.shared_bytes, params.as_mut_ptr())
        };
        // emulation.hpp's `emu::Status`.
        match status {
            0 => Ok(()),
            1 => Err(backend_err(format!("the emulation has no kernel {name}"))),
            2 => Err(backend_err(format!("{name}: a block deadlocked at a barrier in the emulation"))),
            3 => Err(backend_err(format!("{name}: a misaligned word access in the emulation (a fault on a GPU)"))),
            4 => {
                Err(backend_err(format!("{name}: no memory for {} bytes of emulated shared memory", grid.shared_bytes)))
            }
            other => Err(backend_err(format!("{name}: the emulation returned status {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::nvrtc::SOURCES;

    /// The benchmark's peak kernel runs with the arguments `bench::peak` passes (one warp here), and
    /// its stores depend on the products: two runs with different round counts differ.
    #[test]
    fn peak_kernel_runs_with_the_bench_arguments() {
        let gpu = match Emulator::open(&SOURCES[0], "sm_90") {
            Ok(gpu) => gpu,
            Err(e) => return println!("skipped: {e}"),
        };
        let out = gpu.alloc_zeroed(32 * 4).unwrap();
        let grid = Grid { blocks: 1, threads: 32, shared_bytes: 0 };
        let mut results = Vec::new();
        for iters in [1, 2] {
            gpu.launch(0, "peak_mma_u8", grid, &[Arg::I64(32), Arg::Buffer(&out), Arg::I32(iters)]).unwrap();
            results.push(gpu.read(0, &out, 32 * 4).unwrap());
        }
        assert_ne!(results[0], results[1]);
    }

    /// The int8 kernels' requantization (a high-word form from shift 33, 64 bits below) equals the
    /// reference's at every shift, extreme accumulators and multipliers, every zero point and ReLU.
    #[test]
    fn kernel_requantization_matches_the_reference_at_every_shift() {
        const CASES: Source = Source {
            name: "requant_cases.cu",
            text: concat!(
                include_str!("../../../kernels/cuda/common.cuh"),
                include_str!("../../../kernels/cuda/int8.cu"),
                "extern \"C\" __global__ void requant_cases(long long total, const int* acc, const int* m, \
                 const int* sh, const int* flags, unsigned char* out) {\n\
                 long long i = flat_index();\n\
                 if (i < total) out[i] = requant(acc[i], m[i], sh[i], flags[i] & 255, flags[i] >> 8);\n}\n"
            ),
        };
        let gpu = match Emulator::open(&CASES, "sm_90") {
            Ok(gpu) => gpu,
            Err(e) => return println!("skipped: {e}"),
        };
        let mut rng = crate::rng::Rng::new(11);
        let (mut acc, mut m, mut sh, mut flags) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for shift in 1..=62 {
            for a in [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX, rng.next_u64() as i32, rng.next_u64() as i32] {
                for mult in [1, 1 << 30, i32::MAX, (rng.next_u64() >> 33) as i32] {
                    for (z, relu) in [(0, 0), (128, 1), (255, 0), (37, 1)] {
                        acc.push(a);
                        m.push(mult);
                        sh.push(shift);
                        flags.push(z | (relu << 8));
                    }
                }
            }
        }
        let n = acc.len();
        let ints = |v: &[i32]| gpu.upload(bytemuck::cast_slice(v)).unwrap();
        let (acc_b, m_b, sh_b, flags_b) = (ints(&acc), ints(&m), ints(&sh), ints(&flags));
        let out = gpu.alloc_zeroed(n).unwrap();
        let args = [
            Arg::I64(n as i64),
            Arg::Buffer(&acc_b),
            Arg::Buffer(&m_b),
            Arg::Buffer(&sh_b),
            Arg::Buffer(&flags_b),
            Arg::Buffer(&out),
        ];
        let grid = Grid { blocks: n.div_ceil(256) as u32, threads: 256, shared_bytes: 0 };
        gpu.launch(0, "requant_cases", grid, &args).unwrap();
        let got = gpu.read(0, &out, n).unwrap();
        for i in 0..n {
            let (z, relu) = ((flags[i] & 255) as u8, flags[i] >> 8 == 1);
            let want = crate::model::quant::requantize(acc[i], m[i], sh[i] as u8, z, relu);
            assert_eq!(got[i], want, "acc {} M {} sh {} z {z} relu {relu}", acc[i], m[i], sh[i]);
        }
    }

    /// A kernel whose threads wait at a barrier some of them never reach is reported, not hung
    /// (on a GPU that is undefined behaviour), and so is a misaligned word store (a fault there).
    #[test]
    fn a_barrier_some_threads_skip_is_a_deadlock() {
        const STUCK: Source = Source {
            name: "stuck.cu",
            text: "extern \"C\" __global__ void stuck(long long total) {\n    if (threadIdx.x == 0) return;\n    __syncthreads();\n}\n\
                   extern \"C\" __global__ void skewed(long long total) { store_u32(dynamic_shared() + 2, 1); }\n",
        };
        let gpu = match Emulator::open(&STUCK, "sm_90") {
            Ok(gpu) => gpu,
            Err(e) => return println!("skipped: {e}"),
        };
        let err = gpu.launch(0, "stuck", Grid { blocks: 1, threads: 64, shared_bytes: 0 }, &[Arg::I64(0)]).unwrap_err();
        assert!(err.to_string().contains("deadlocked"), "{err}");
        let err =
            gpu.launch(0, "skewed", Grid { blocks: 1, threads: 32, shared_bytes: 8 }, &[Arg::I64(0)]).unwrap_err();
        assert!(err.to_string().contains("misaligned"), "{err}");
        assert!(gpu.launch(0, "absent", Grid { blocks: 1, threads: 32, shared_bytes: 0 }, &[]).is_err());
    }
}
