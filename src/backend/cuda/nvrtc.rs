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
//! link named `libnvrtc.so` to the CUDA 13 library, on `LD_LIBRARY_PATH` when the process starts,
//! with the library's own folder (libnvrtc loads its `libnvrtc-builtins.so.<version>` by name); a
//! toolkit's `lib64` folder is both, having that link already. The symbols cudarc resolves are looked up one by
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

/// Every CUDA kernel source: int8 (dp4a and tensor cores) and fp32 with f32 or f16 weights.
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
             but this machine has {}; put a folder holding a link named libnvrtc.so to it, and that file's folder, on \
             LD_LIBRARY_PATH",
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

/// What a kernel parameter takes, read from its declaration.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Pointer,
    I32,
    I64,
}

/// A kernel of a source: its `extern "C"` name and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
}

/// Every kernel `source` declares, read from the text: `__global__ void name(...)` declarations,
/// with float.cu's per-weight-type macro expanded (its suffixes are read from the instantiations).
/// The launches are untyped at run time, so their argument lists are checked against these in
/// tests, and the host emulation registers these names.
pub fn kernels(source: &Source) -> Vec<Kernel> {
    let text = source.text.replace("\\\n", " ");
    let suffixes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("WEIGHT_KERNELS("))
        .filter_map(|rest| rest.split(',').nth(1))
        .map(|s| s.trim().trim_end_matches(')'))
        .collect();
    let mut out = Vec::new();
    for decl in text.split("__global__ void ").skip(1) {
        let Some((name, rest)) = decl.split_once('(') else { continue };
        let Some((list, _)) = rest.split_once(')') else { continue };
        let params: Vec<Param> = list
            .split(',')
            .map(|p| {
                if p.contains('*') {
                    Param::Pointer
                } else if p.contains("long long") {
                    Param::I64
                } else {
                    Param::I32
                }
            })
            .collect();
        match name.trim().strip_suffix("##SUFFIX") {
            Some(base) => {
                out.extend(suffixes.iter().map(|s| Kernel { name: format!("{base}{s}"), params: params.clone() }))
            }
            None => out.push(Kernel { name: name.trim().to_string(), params }),
        }
    }
    out
}

/// NVRTC options: IEEE f32 arithmetic (no fast math, no flush to zero), as docs/NUMERICS.md asks of
/// the float kernels; the int8 kernels are integer-only either way. The architecture goes in as an
/// option string because cudarc's `arch` field takes only a `&'static str` and a device's is known
/// at run time.
pub fn options(arch: &str, name: &str) -> CompileOptions {
    CompileOptions {
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some(name.to_string()),
        ..CompileOptions::default()
    }
}

/// PTX of `source` for `arch` (e.g. "sm_90"), or one line with NVRTC's log on failure.
pub fn compile(source: &Source, arch: &str) -> Result<String, String> {
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

/// Where compiled PTX is kept between runs: `LTVX_CACHE_DIR`, else `$XDG_CACHE_HOME/ltvx`, else
/// `~/.cache/ltvx`, with `ptx/` below; `None` when none of them is set.
fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("LTVX_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("ltvx")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/ltvx")))?;
    Some(base.join("ptx"))
}

/// The cache file of `source` for `arch`: named by an FNV-1a 64 hash of the source text, the NVRTC
/// options and version, and the architecture, so any change of those compiles afresh.
fn cache_path(dir: &Path, source: &Source, arch: &str, nvrtc_version: &str) -> PathBuf {
    let key = format!("{}\0{:?}\0{nvrtc_version}\0{arch}", source.text, options(arch, source.name));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key.as_bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    dir.join(format!("{}-{arch}-{h:016x}.ptx", source.name.trim_end_matches(".cu")))
}

/// [`compile`] through the on-disk cache ([`cache_dir`]).
pub fn compile_cached(source: &Source, arch: &str) -> Result<String, String> {
    match cache_dir() {
        Some(dir) => compile_cached_in(&dir, source, arch),
        None => compile(source, arch),
    }
}

/// [`compile`] through the cache in `dir`. A cache that cannot be read or written only costs a
/// compilation, so its errors are not the caller's: the PTX is returned regardless.
fn compile_cached_in(dir: &Path, source: &Source, arch: &str) -> Result<String, String> {
    let path = cache_path(dir, source, arch, &version()?);
    if let Ok(ptx) = std::fs::read_to_string(&path) {
        return Ok(ptx);
    }
    let ptx = compile(source, arch)?;
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = crate::atomic_file::write(&path, |w| w.write_all(ptx.as_bytes()));
    }
    Ok(ptx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first compilation writes the cache file, the next one reads it (shown by editing the
    /// file in between), and another architecture is another file. Skipped without libnvrtc.
    #[test]
    fn ptx_is_cached_per_source_and_architecture() {
        if let Err(reason) = available() {
            println!("skipped: {reason}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ptx = compile_cached_in(dir.path(), &SOURCES[0], "sm_80").unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), ptx);
        std::fs::write(&files[0], "// from the cache").unwrap();
        assert_eq!(compile_cached_in(dir.path(), &SOURCES[0], "sm_80").unwrap(), "// from the cache");
        compile_cached_in(dir.path(), &SOURCES[0], "sm_90").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
