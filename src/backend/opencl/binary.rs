//! Offline-compiled programs (`--fpga-binary FILE`): an FPGA has no OpenCL C compiler at run time, so
//! its kernels arrive as a vendor binary (Intel `.aocx`, AMD/Xilinx `.xclbin`) loaded with
//! clCreateProgramWithBinary. Two refusals guard it, each with the reason in one line: a binary whose
//! compiled-in model hash (kernels/opencl/model_hash.cl) is not the model's, and an AMD/Xilinx
//! emulation binary without the `XCL_EMULATION_MODE` it needs (XRT otherwise fails with an opaque
//! CL_INVALID_PROGRAM, -44).

use std::path::Path;

use opencl3::program::Program as ClProgram;

use super::runtime::{Arg, Profile, Runtime};
use crate::model::Model;

pub const MODEL_HASH_CL: &str = include_str!("../../../kernels/opencl/model_hash.cl");

/// `axlf.m_header.m_mode` of an xclbin: after the 8-byte magic, 32 bytes of signature data, the
/// 256-byte key block and the 8-byte unique id comes the header, whose mode follows three u64 and
/// four bytes of version (xclbin.h).
const XCLBIN_MODE_OFFSET: usize = 304 + 28;

/// The emulation mode an AMD/Xilinx binary was built for (`v++ -t sw_emu|hw_emu`), `None` for a
/// hardware binary or another vendor's.
pub fn xclbin_emulation(bytes: &[u8]) -> Option<&'static str> {
    if !bytes.starts_with(b"xclbin2\0") {
        return None;
    }
    let mode = bytes.get(XCLBIN_MODE_OFFSET..XCLBIN_MODE_OFFSET + 2)?;
    match u16::from_le_bytes([mode[0], mode[1]]) {
        4 | 6 => Some("hw_emu"),
        5 => Some("sw_emu"),
        _ => None,
    }
}

/// Whether XRT can load `bytes` with `XCL_EMULATION_MODE` set to `env`.
pub fn check_emulation(path: &Path, bytes: &[u8], env: Option<&str>) -> Result<(), String> {
    let file = path.display();
    match (xclbin_emulation(bytes), env) {
        (Some(mode), Some(set)) if set == mode => Ok(()),
        (Some(mode), None) => Err(format!(
            "{file} is an AMD/Xilinx {mode} binary: set XCL_EMULATION_MODE={mode} (with the emconfig.json of `emconfigutil` beside the program); without it XRT rejects the binary with CL_INVALID_PROGRAM (-44)"
        )),
        (Some(mode), Some(set)) => {
            Err(format!("{file} is an AMD/Xilinx {mode} binary, but XCL_EMULATION_MODE is {set:?}"))
        }
        (None, Some(set)) if bytes.starts_with(b"xclbin2\0") => Err(format!(
            "{file} is an AMD/Xilinx hardware binary, but XCL_EMULATION_MODE={set:?} asks XRT for an emulator: unset it"
        )),
        (None, _) => Ok(()),
    }
}

/// Reads `path` and builds its program on the runtime's device, refusing emulation binaries XRT
/// cannot load as the environment stands.
pub fn load(rt: &Runtime, path: &Path) -> Result<ClProgram, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("--fpga-binary {}: {e}", path.display()))?;
    check_emulation(path, &bytes, std::env::var("XCL_EMULATION_MODE").ok().as_deref())?;
    rt.build_binary(&path.display().to_string(), &bytes)
}

/// The model hash as the kernels carry it (`ltvx info` prints it in hex).
pub fn model_hash(model: &Model) -> u64 {
    u64::from_str_radix(&model.hash(), 16).expect("Model::hash is 16 hex digits")
}

/// Refuses a program compiled for another model (or for none: hash 0).
pub fn check_model(rt: &Runtime, program: &ClProgram, what: &str, model: &Model) -> Result<(), String> {
    let kernel = rt
        .kernel(program, "ltvx_model_hash")
        .map_err(|e| format!("{what} has no model hash ({e}); build it with kernels/opencl/model_hash.cl"))?;
    let out = rt.scratch(8)?;
    let mut events = Vec::new();
    rt.launch(&kernel, "ltvx_model_hash", &[Arg::Mem(&out)], &[1], None, &mut events)?;
    let mut bytes = [0u8; 8];
    rt.read(&out, &mut bytes, &mut events)?;
    rt.settle(events, &mut Profile::default())?;
    let (found, wanted) = (u64::from_le_bytes(bytes), model_hash(model));
    match found {
        f if f == wanted => Ok(()),
        0 => Err(format!(
            "{what} was compiled without a model hash (-DLTVX_MODEL_HASH=0x{wanted:016x}UL for this model)"
        )),
        f => Err(format!("{what} was compiled for model hash {f:016x}, not this model's {wanted:016x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xclbin(mode: u16) -> Vec<u8> {
        let mut b = b"xclbin2\0".to_vec();
        b.resize(400, 0);
        b[XCLBIN_MODE_OFFSET..XCLBIN_MODE_OFFSET + 2].copy_from_slice(&mode.to_le_bytes());
        b
    }

    #[test]
    fn emulation_binaries_need_their_xcl_emulation_mode() {
        let path = Path::new("k.xclbin");
        let err = check_emulation(path, &xclbin(5), None).unwrap_err();
        assert!(err.contains("sw_emu") && err.contains("XCL_EMULATION_MODE=sw_emu") && err.contains("-44"), "{err}");
        assert!(check_emulation(path, &xclbin(5), Some("sw_emu")).is_ok());
        assert!(check_emulation(path, &xclbin(4), Some("sw_emu")).unwrap_err().contains("hw_emu"));
        assert!(check_emulation(path, &xclbin(0), None).is_ok());
        assert!(check_emulation(path, &xclbin(0), Some("hw_emu")).unwrap_err().contains("unset it"));
        // Another vendor's binary (or a truncated header) is not XRT's business.
        assert!(check_emulation(path, b"\x7fELF...", Some("sw_emu")).is_ok());
        assert_eq!(xclbin_emulation(b"xclbin2\0short"), None);
    }
}
