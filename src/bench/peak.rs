//! The machine's arithmetic ceiling, measured rather than assumed: register-resident loops of
//! independent multiply-accumulate chains (no memory traffic) timed on one core. `ltvx bench`
//! states each configuration's speed as a share of it.

use std::time::Instant;

use crate::backend::cpu::Isa;
use crate::model::Precision;

/// Iterations per timing; each runs 12 independent chains, long enough to hide the latency.
const ITERS: u64 = 4_000_000;
const CHAINS: u64 = 12;

/// Multiply-adds per second one core reaches with the instruction set the CPU kernels use for
/// `precision` on `isa` (u8×s8 for int8, f32 FMA for fp32/fp16). The best of three timings.
pub fn per_core(isa: Isa, precision: Precision) -> f64 {
    // A family the CPU lacks is measured with the portable loop rather than executed.
    let isa = if isa.available() { isa } else { Isa::Portable };
    (0..3).map(|_| once(isa, precision)).fold(0.0, f64::max)
}

fn once(isa: Isa, precision: Precision) -> f64 {
    let int8 = precision == Precision::Int8;
    let start = Instant::now();
    let (sink, macs_per_iter) = match (isa, int8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `per_core` passes only a family the CPU has.
        (Isa::Avx512Vnni, true) => (unsafe { x86::vnni(ITERS) }, CHAINS * 64),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx512Vnni, false) => (unsafe { x86::fma512(ITERS) }, CHAINS * 16),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, true) => (unsafe { x86::maddwd(ITERS) }, CHAINS * 16),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2, false) => (unsafe { x86::fma256(ITERS) }, CHAINS * 8),
        _ => (scalar(ITERS), CHAINS),
    };
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    (ITERS * macs_per_iter) as f64 / secs
}

fn scalar(iters: u64) -> i64 {
    let mut acc = [0f32; CHAINS as usize];
    let x = std::hint::black_box(1.000_001f32);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * x + x;
        }
    }
    acc.iter().sum::<f32>() as i64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    macro_rules! chains {
        ($iters:expr, $zero:expr, $x:expr, $step:expr, $fold:expr) => {{
            let mut acc = [$zero; 12];
            let x = std::hint::black_box($x);
            for _ in 0..$iters {
                for a in acc.iter_mut() {
                    *a = $step(*a, x);
                }
            }
            acc.iter().fold(0i64, |s, a| s.wrapping_add($fold(*a)))
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn vnni(iters: u64) -> i64 {
        chains!(iters, _mm512_setzero_si512(), _mm512_set1_epi8(3), |a, x| _mm512_dpbusd_epi32(a, x, x), |a| {
            _mm512_reduce_add_epi32(a) as i64
        })
    }

    #[target_feature(enable = "avx512f,fma")]
    pub unsafe fn fma512(iters: u64) -> i64 {
        chains!(iters, _mm512_setzero_ps(), _mm512_set1_ps(1.0), |a, x| _mm512_fmadd_ps(a, x, x), |a| {
            _mm512_reduce_add_ps(a) as i64
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn maddwd(iters: u64) -> i64 {
        // Each chain feeds its own `vpmaddwd` (a madd of x alone would be hoisted out of the loop).
        chains!(iters, _mm256_set1_epi16(1), _mm256_set1_epi16(3), |a, x| _mm256_madd_epi16(a, x), |a| {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` holds exactly one 256-bit vector.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), a) };
            lanes.iter().map(|&l| l as i64).sum::<i64>()
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> i64 {
        chains!(iters, _mm256_setzero_ps(), _mm256_set1_ps(1.0), |a, x| _mm256_fmadd_ps(a, x, x), |a| {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds exactly one 256-bit vector.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
            lanes.iter().sum::<f32>() as i64
        })
    }
}
