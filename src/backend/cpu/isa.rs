//! Which instruction set the CPU kernels use: detected at run time, forceable with `LTVX_CPU_ISA`
//! (tests and benchmarks run every path the machine has, one by one).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Environment variable that forces a kernel family.
pub const ISA_ENV: &str = "LTVX_CPU_ISA";

/// A kernel family, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isa {
    /// AVX-512 with VNNI: `vpdpbusd` (u8 × s8 → i32, 4 per lane) for int8, 16-lane FMA for floats.
    Avx512Vnni,
    /// AVX2 + FMA + F16C: widened i16 `vpmaddwd` for int8 (exact; `vpmaddubsw` would saturate), 8-lane FMA.
    Avx2,
    /// Plain Rust, any CPU.
    Portable,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Avx512Vnni, Isa::Avx2, Isa::Portable];

    /// Whether this machine can run the family.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Avx512Vnni => {
                    has!("avx512f")
                        && has!("avx512bw")
                        && has!("avx512dq")
                        && has!("avx512vl")
                        && has!("avx512vnni")
                        && has!("fma")
                }
                Isa::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                Isa::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }

    /// The fastest family this machine has.
    pub fn best() -> Isa {
        Isa::ALL.into_iter().find(|i| i.available()).unwrap_or(Isa::Portable)
    }

    /// Every family this machine has.
    pub fn available_all() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// The family `LTVX_CPU_ISA` asks for (`Ok(None)` when unset or `auto`), refusing one this machine lacks.
    pub fn from_env() -> Result<Option<Isa>, String> {
        match std::env::var(ISA_ENV) {
            Ok(v) if !v.is_empty() && v != "auto" => {
                let isa: Isa = v.parse().map_err(|e| format!("{ISA_ENV}: {e}"))?;
                isa.require().map(Some)
            }
            _ => Ok(None),
        }
    }

    /// `Ok(self)` when the machine has it, else a one-line reason.
    pub fn require(self) -> Result<Isa, String> {
        if self.available() {
            Ok(self)
        } else {
            Err(format!("this CPU lacks {self} (it has: {})", names(&Isa::available_all())))
        }
    }
}

fn names(isas: &[Isa]) -> String {
    isas.iter().map(Isa::to_string).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        })
    }
}

impl FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.to_string() == s)
            .ok_or_else(|| format!("unknown instruction set {s:?} (expected avx512vnni, avx2 or portable)"))
    }
}

/// Defines `fn $name(isa, args…)` that runs `$inner(args…)` compiled with the family's target
/// features, so that LLVM vectorizes plain loops with its instructions (e.g. `round_ties_even`
/// becomes one `vrndscaleps` instead of a libm call). Named functions rather than closures: a
/// closure is compiled on its own, without the caller's features.
macro_rules! per_isa {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $inner:path) => {
        $vis fn $name(isa: $crate::backend::cpu::isa::Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,fma")]
            unsafe fn avx512($($arg: $ty),*) {
                $inner($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $inner($($arg),*)
            }
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a plan holds only a family the CPU has (`Isa::require`).
                $crate::backend::cpu::isa::Isa::Avx512Vnni => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                $crate::backend::cpu::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => $inner($($arg),*),
            }
        }
    };
}
pub(crate) use per_isa;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_portable_is_always_there() {
        for isa in Isa::ALL {
            assert_eq!(isa.to_string().parse::<Isa>(), Ok(isa));
        }
        assert!("sse9".parse::<Isa>().unwrap_err().contains("unknown instruction set"));
        assert!(Isa::Portable.available());
        assert!(Isa::available_all().contains(&Isa::best()));
    }
}
