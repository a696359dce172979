//! AVX2 int8 GEMM: activations widened to i16 once per layer, weights stored as i16 pairs, and
//! `vpmaddwd` (i16 × i16 → i32, pairs summed) — exact for u8 × s8, unlike `vpmaddubsw`, which
//! saturates at i16. The epilogue requantizes in registers; AVX2 has no 64-bit arithmetic shift or
//! 64-bit min/max, so both are built from logical shifts and compares.

use std::arch::x86_64::*;

use super::int8::{Block, Layer, Out};

const LANES: usize = 8;

/// # Safety
/// The CPU must have AVX2, and `a` (the widened activations) must be readable for whole tiles past
/// `rows` (`Layer::run` checks it).
#[target_feature(enable = "avx2")]
pub unsafe fn gemm(a: &[i16], lda: usize, rows: usize, layer: &Layer, out: &mut Out) {
    for b in &layer.blocks {
        // SAFETY: forwarded from the caller.
        unsafe {
            if let Some(groups) = &b.groups {
                sparse_tiles::<6>(a.as_ptr(), lda, rows, groups, b, out);
                continue;
            }
            match b.nv {
                1 => tiles::<1, 6>(a.as_ptr(), lda, rows, layer.k, b, out),
                2 => tiles::<2, 4>(a.as_ptr(), lda, rows, layer.k, b, out),
                _ => tiles::<4, 2>(a.as_ptr(), lda, rows, layer.k, b, out),
            }
        }
    }
}

#[inline(always)]
unsafe fn tiles<const NV: usize, const MR: usize>(
    a: *const i16,
    lda: usize,
    rows: usize,
    k: usize,
    b: &Block,
    out: &mut Out,
) {
    const {
        assert!(
            MR.is_multiple_of(2) && MR <= crate::backend::cpu::int8::SLACK_ROWS,
            "a tile: whole row pairs (fused pool), within the slack rows"
        )
    };
    // SAFETY (whole function): `Layer::pack` sizes `w16` as k/2 pairs × NV·16 values and every per-lane
    // array as NV·8; `a` reads stay inside the caller's checked buffer. A block of 3 vectors runs
    // as 4: the packing pads it to whole vectors.
    unsafe {
        let bias: [__m256i; NV] = std::array::from_fn(|v| _mm256_loadu_si256(b.bias.as_ptr().add(v * LANES).cast()));
        let mut r0 = 0;
        while r0 < rows {
            let acc = accumulate::<NV, MR>(bias, a.add(r0 * lda), lda, k, b.w16.as_ptr());
            store::<NV, MR>(&acc, r0, rows, b, out);
            r0 += MR;
        }
    }
}

/// One register tile of `MR` rows against `k/2` packed weight pairs, returned by value so that the
/// accumulators stay in registers.
#[inline(always)]
unsafe fn accumulate<const NV: usize, const MR: usize>(
    bias: [__m256i; NV],
    a: *const i16,
    lda: usize,
    k: usize,
    w: *const i16,
) -> [[__m256i; NV]; MR] {
    // SAFETY: the caller's bounds (see `tiles`).
    unsafe {
        let mut acc = [bias; MR];
        let (mut ap, mut wp) = (a, w);
        for _ in 0..k / 2 {
            let w: [__m256i; NV] = std::array::from_fn(|v| _mm256_loadu_si256(wp.add(v * 16).cast()));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi32(ap.add(r * lda).cast::<i32>().read_unaligned());
                for v in 0..NV {
                    acc_r[v] = _mm256_add_epi32(acc_r[v], _mm256_madd_epi16(x, w[v]));
                }
            }
            ap = ap.add(2);
            wp = wp.add(NV * 16);
        }
        acc
    }
}

/// A block-sparse block of 8 channels: only its non-zero pairs of reduction elements are multiplied.
#[inline(always)]
unsafe fn sparse_tiles<const MR: usize>(
    a: *const i16,
    lda: usize,
    rows: usize,
    groups: &[u32],
    b: &Block,
    out: &mut Out,
) {
    // SAFETY: `w16` holds one 8-lane pair vector per listed group; group offsets are inside the padded
    // reduction, which the caller's bounds cover.
    unsafe {
        let bias = [_mm256_loadu_si256(b.bias.as_ptr().cast())];
        let mut r0 = 0;
        while r0 < rows {
            let mut acc = [bias; MR];
            let ap = a.add(r0 * lda);
            for (i, &g) in groups.iter().enumerate() {
                let w = _mm256_loadu_si256(b.w16.as_ptr().add(i * 16).cast());
                let gp = ap.add(2 * g as usize);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(gp.add(r * lda).cast::<i32>().read_unaligned());
                    acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(x, w));
                }
            }
            store::<1, MR>(&acc, r0, rows, b, out);
            r0 += MR;
        }
    }
}

#[inline(always)]
unsafe fn store<const NV: usize, const MR: usize>(
    acc: &[[__m256i; NV]; MR],
    r0: usize,
    rows: usize,
    b: &Block,
    out: &mut Out,
) {
    let valid = |v: usize| b.width.saturating_sub(v * LANES).min(LANES);
    // SAFETY: every store is limited to real channels (through a lane buffer) and real rows.
    unsafe {
        match out {
            Out::Acc { dst, ldd } => {
                for (r, acc_r) in acc.iter().enumerate().take(rows.saturating_sub(r0)) {
                    for (v, &x) in acc_r.iter().enumerate().take_while(|(v, _)| valid(*v) > 0) {
                        let mut lanes = [0i32; LANES];
                        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), x);
                        let at = (r0 + r) * *ldd + b.col0 + v * LANES;
                        dst[at..at + valid(v)].copy_from_slice(&lanes[..valid(v)]);
                    }
                }
            }
            Out::Requant { dst, ldd, z_out, relu, pool } => {
                let z = *z_out as i64;
                let (lo, hi) = (_mm256_set1_epi64x(if *relu { 0 } else { -z }), _mm256_set1_epi64x(255 - z));
                let (step, out_rows, out0) = if *pool { (2, rows / 2, r0 / 2) } else { (1, rows, r0) };
                for i in 0..(MR / step).min(out_rows.saturating_sub(out0)) {
                    for v in (0..NV).take_while(|&v| valid(v) > 0) {
                        let x = if *pool { _mm256_max_epi32(acc[2 * i][v], acc[2 * i + 1][v]) } else { acc[i][v] };
                        let mut lanes = [0i32; LANES];
                        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), requant(x, b, v, lo, hi));
                        let at = (out0 + i) * *ldd + b.col0 + v * LANES;
                        for (d, &q) in dst[at..at + valid(v)].iter_mut().zip(&lanes) {
                            *d = (q + z as i32) as u8;
                        }
                    }
                }
            }
        }
    }
}

/// 8 accumulators → `clamp((acc·M + 2^(sh−1)) >> sh, lo, hi)` per lane, as i32 (before adding z).
#[inline(always)]
unsafe fn requant(acc: __m256i, b: &Block, v: usize, lo: __m256i, hi: __m256i) -> __m256i {
    // SAFETY: per-lane arrays hold NV·8 (mult) and NV·4 (even/odd) entries.
    unsafe {
        let m = _mm256_loadu_si256(b.mult.as_ptr().add(v * LANES).cast());
        let half = |p: &Vec<i64>| _mm256_loadu_si256(p.as_ptr().add(v * LANES / 2).cast());
        let even = _mm256_mul_epi32(acc, m);
        let odd = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(m, 32));
        let even = clamp(sra64(_mm256_add_epi64(even, half(&b.round_even)), half(&b.shift_even)), lo, hi);
        let odd = clamp(sra64(_mm256_add_epi64(odd, half(&b.round_odd)), half(&b.shift_odd)), lo, hi);
        _mm256_blend_epi32::<0b1010_1010>(even, _mm256_slli_epi64(odd, 32))
    }
}

/// Arithmetic right shift of i64 lanes by per-lane counts in 1..=62: a logical shift, then the sign
/// bits shifted back in from the left.
#[inline(always)]
unsafe fn sra64(x: __m256i, sh: __m256i) -> __m256i {
    // SAFETY: register-only AVX2 operations; the caller runs with AVX2 enabled.
    unsafe {
        let negative = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
        let fill = _mm256_sllv_epi64(negative, _mm256_sub_epi64(_mm256_set1_epi64x(64), sh));
        _mm256_or_si256(_mm256_srlv_epi64(x, sh), fill)
    }
}

#[inline(always)]
unsafe fn clamp(x: __m256i, lo: __m256i, hi: __m256i) -> __m256i {
    // SAFETY: register-only AVX2 operations; the caller runs with AVX2 enabled.
    unsafe {
        let x = _mm256_blendv_epi8(lo, x, _mm256_cmpgt_epi64(x, lo));
        _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi))
    }
}
