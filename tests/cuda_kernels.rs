//! Every CUDA kernel source compiles with NVRTC for every architecture CI targets (sm_80, sm_90),
//! reaching the instructions it is written for; and one tensor-core mma equals the host's product,
//! in the emulation and on a GPU where there is one. NVRTC needs no GPU: CI installs the
//! `nvidia-cuda-nvrtc-cu12` wheel and puts its lib folder on `LD_LIBRARY_PATH`. Without a loadable
//! libnvrtc the compile tests print "skipped: <reason>" and pass, unless `LTVX_REQUIRE` names
//! `nvrtc` (set in CI), in which case they fail.

use ltvx::backend::cuda::nvrtc;

#[test]
fn every_cuda_kernel_compiles_for_sm80_and_sm90() {
    if let Err(reason) = nvrtc::available() {
        let required = std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|s| s.trim() == "nvrtc");
        assert!(!required, "nvrtc is required (LTVX_REQUIRE) but cannot be used: {reason}");
        println!("skipped: {reason}");
        return;
    }
    println!("NVRTC {}", nvrtc::version().unwrap());
    let mut failures = Vec::new();
    for source in &nvrtc::SOURCES {
        for arch in nvrtc::CI_ARCHS {
            match nvrtc::compile(source, arch) {
                // Every declared kernel being in the PTX is checked with the launches' signatures
                // (src/backend/cuda/compile.rs), which parse the declarations already.
                Ok(ptx) => {
                    assert!(ptx.contains(&format!(".target {arch}")), "{} for {arch}: no .target line", source.name)
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "NVRTC errors:\n{}", failures.join("\n"));
}

/// The int8 kernels reach dp4a: the u8×s8 form NUMERICS.md names, not a same-sign one.
#[test]
fn int8_kernels_use_mixed_sign_dp4a() {
    if let Err(reason) = nvrtc::available() {
        println!("skipped: {reason}");
        return;
    }
    let ptx = nvrtc::compile(&nvrtc::SOURCES[0], "sm_90").unwrap();
    assert!(ptx.contains("dp4a.u32.s32"), "no dp4a.u32.s32 in the int8 PTX");
}

/// The tensor-core kernel reaches the int8 mma instruction on every architecture CI compiles for.
#[test]
fn int8_kernels_use_tensor_cores_from_sm80() {
    if let Err(reason) = nvrtc::available() {
        println!("skipped: {reason}");
        return;
    }
    for arch in nvrtc::CI_ARCHS {
        let ptx = nvrtc::compile(&nvrtc::SOURCES[0], arch).unwrap();
        assert!(ptx.contains("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32"), "no int8 mma in the {arch} PTX");
    }
}

/// One tensor-core mma on known matrices equals the product computed on the host: in the host
/// emulation always (skipped without a C++ compiler), and on GPU 0 where there is one (required
/// with `LTVX_REQUIRE=cuda`; a GPU before sm_80 has no int8 mma and reports so). On a GPU host this checks the fragment layout the
/// int8 kernels rely on before the conformance suite does, naming any element that differs.
#[test]
fn tensor_core_fragments_match_the_host_product() {
    use ltvx::backend::cuda::{check_tensor_cores, emulator};
    let required = |what: &str| std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|s| s.trim() == what);
    match emulator::available() {
        Ok(()) => assert!(check_tensor_cores(0, Some("sm_90")).unwrap()),
        Err(reason) => {
            assert!(!required("cuda-emulation"), "the CUDA emulation is required but cannot run: {reason}");
            println!("skipped: emulated mma check: {reason}");
        }
    }
    match check_tensor_cores(0, None) {
        Ok(true) => println!("GPU 0: the int8 mma fragments match the host product"),
        Ok(false) => {
            println!("skipped: mma check on GPU 0: it has no int8 mma (before sm_80); its int8 kernels use dp4a")
        }
        Err(reason) if !required("cuda") => println!("skipped: mma check on GPU 0: {reason}"),
        Err(reason) => panic!("mma check on GPU 0: {reason}"),
    }
}
