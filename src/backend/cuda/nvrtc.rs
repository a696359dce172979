//! The CUDA kernels (kernels/cuda/*.cu) and their compilation to PTX by NVRTC, through cudarc.
//!
//! NVRTC needs no GPU, so CI compiles every kernel for every architecture ltvx targets
//! (tests/cuda_kernels.rs) on a machine with only the `nvidia-cuda-nvrtc-cu12` wheel.
//!
//! Which libnvrtc is loaded: cudarc (feature `cuda-12080`, dynamic loading) dlopens the names
//! `libnvrtc.so`, `libnvrtc.so.12`, … (`cudarc::get_lib_name_candidates`) but never
//! `libnvrtc.so.13`, and offers no way to pass a path. glibc only matches an already loaded library
//! by its file name or soname, so preloading CUDA 13's `libnvrtc.so.13` ourselves would not satisfy
//! cudarc's `dlopen("libnvrtc.so")` either. What does work on a CUDA 13 system: a folder holding a
//! link named `libnvrtc.so` to the CUDA 13 library, on `LD_LIBRARY_PATH` when the process starts (a
//! toolkit's `lib64` folder already has that link). The symbols cudarc resolves are looked up one by
//! one when first called, and those used here (create, compile, log, PTX, destroy, version) are
//! the same in CUDA 12 and 13. When no name loads, [`available`] looks for a CUDA 13 library in the
//! usual places and says exactly that in its one line; scripts/gpu-check.sh makes the link itself.

use std::path::{Path, PathBuf};

use cudarc::nvrtc::{CompileError, CompileOptions};

/// One kernel source file of kernels/cuda, with common.cuh in front (NVRTC compiles strings, with no
/// include path).
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub name: &'static str,
    pub text: &'static str,
}

/// Every CUDA kernel source: int8 (dp4a) and fp32 with f32 or f16 weights.
pub const SOURCES: [Source; 2] = [
    Source {
        name: "int8.cu",
        text: concat!(include_str!("../../../kernels/cuda/common.cuh"), include_str!("../../../kernels/cuda/int8.cu")),
    },
    Source {
        name: "float.cu",
        text: concat!(include_str!("../../../kernels/cuda/common.cuh"), include_str!("../../../kernels/cuda/float.cu")),
    },
];

/// The architectures CI compiles for: Ampere (A100) and Hopper (H100/H200). dp4a needs sm_61.
pub const CI_ARCHS: [&str; 2] = ["sm_80", "sm_90"];

/// `Err(one line)` when no NVRTC library can be loaded; cudarc would panic on first use.
pub fn available() -> Result<(), String> {
    // SAFETY: only tries to dlopen the candidate names; no NVRTC function is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(());
    }
    Err(match find_cuda13() {
        Some(path) => format!(
            "no NVRTC library that cudarc (built for CUDA 12.8) loads: it looks for libnvrtc.so and libnvrtc.so.12, \
             but this machine has {}; put a folder holding a link named libnvrtc.so to it on LD_LIBRARY_PATH",
            path.display()
        ),
        None => "no NVRTC library (libnvrtc.so or libnvrtc.so.12) on the library path: install the CUDA toolkit, or \
                 the PyPI wheel nvidia-cuda-nvrtc-cu12, and put its lib folder on LD_LIBRARY_PATH"
            .into(),
    })
}

/// The NVRTC version, as "major.minor", once [`available`] said yes.
pub fn version() -> Result<String, String> {
    available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); the pointers are to live locals.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcVersion failed: {status:?}"));
    }
    Ok(format!("{major}.{minor}"))
}

/// A CUDA 13 NVRTC library in the places CUDA installs put it, for the message of [`available`].
fn find_cuda13() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> =
        ["CUDA_HOME", "CUDA_PATH"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    roots.push("/usr/local/cuda".into());
    if let Ok(entries) = std::fs::read_dir("/usr/local") {
        let mut versioned: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("cuda-")))
            .collect();
        versioned.sort();
        roots.extend(versioned);
    }
    let mut dirs: Vec<PathBuf> =
        roots.iter().flat_map(|r| [r.join("lib64"), r.join("targets/x86_64-linux/lib"), r.join("lib")]).collect();
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map(PathBuf::from));
    dirs.iter().map(|d| d.join("libnvrtc.so.13")).find(|p| Path::exists(p))
}

/// NVRTC options: IEEE f32 arithmetic (no fast math, no flush to zero), as docs/NUMERICS.md asks of
/// the float kernels and of the input quantization; the int8 kernels are integer-only either way.
pub fn options(arch: &'static str, name: &str) -> CompileOptions {
    CompileOptions {
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        arch: Some(arch),
        name: Some(name.to_string()),
        ..CompileOptions::default()
    }
}

/// PTX of `source` for `arch` (e.g. "sm_90"), or one line with NVRTC's log on failure.
pub fn compile(source: &Source, arch: &'static str) -> Result<String, String> {
    available()?;
    cudarc::nvrtc::compile_ptx_with_opts(source.text, options(arch, source.name)).map(|p| p.to_src()).map_err(|e| {
        match e {
            CompileError::CompileError { log, .. } => {
                format!("{} for {arch}: {}", source.name, log.to_string_lossy().trim().replace('\n', " | "))
            }
            other => format!("{} for {arch}: {other}", source.name),
        }
    })
}
