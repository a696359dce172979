//! The host CPU as the fast SIMD backend will see it: instruction sets and cores.

use super::{BackendKind, Device, Probe};

/// The SIMD extensions the int8 / fp16 / fp32 kernels care about, as detected at run time.
pub fn isa_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            found.push("avx512vnni");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            found.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            found.push("fma");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            found.push("f16c");
        }
    }
    found
}

pub fn probe() -> Probe {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let isa = isa_features();
    let detail = format!(
        "{} on {threads} hardware threads; ISA: {}",
        std::env::consts::ARCH,
        if isa.is_empty() { "portable only".to_string() } else { isa.join(", ") }
    );
    Probe {
        backend: BackendKind::Cpu,
        usable: true,
        reason: None,
        devices: vec![Device { index: 0, name: "host CPU".into(), detail }],
    }
}
