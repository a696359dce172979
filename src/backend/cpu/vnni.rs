//! AVX-512 VNNI int8 GEMM: a register tile of MR rows × NV vectors of 16 output channels, each step
//! broadcasting 4 u8 activations of a row and `vpdpbusd`-ing them with 4 s8 weights per lane. The
//! epilogue requantizes in registers: 32×32→64-bit products of even and odd lanes, the rounding term,
//! an arithmetic 64-bit shift, a clamp to [lo, 255] in i64, then the zero point — docs/NUMERICS.md B.

use std::arch::x86_64::*;

use super::int8::{Block, Layer, Out};

const LANES: usize = 16;

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI, and `a` must be readable for whole tiles past `rows`
/// (`Layer::run` checks it).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm(a: &[u8], lda: usize, rows: usize, layer: &Layer, out: &mut Out) {
    for b in &layer.blocks {
        // SAFETY: forwarded from the caller.
        unsafe {
            if let Some(groups) = &b.groups {
                match b.nv {
                    1 => sparse_tiles::<1, 8>(a.as_ptr(), lda, rows, groups, b, out),
                    _ => sparse_tiles::<2, 8>(a.as_ptr(), lda, rows, groups, b, out),
                }
                continue;
            }
            match b.nv {
                1 => tiles::<1, 12>(a.as_ptr(), lda, rows, layer.k, b, out),
                2 => tiles::<2, 12>(a.as_ptr(), lda, rows, layer.k, b, out),
                3 => tiles::<3, 8>(a.as_ptr(), lda, rows, layer.k, b, out),
                _ => tiles::<4, 6>(a.as_ptr(), lda, rows, layer.k, b, out),
            }
        }
    }
}

#[inline(always)]
unsafe fn tiles<const NV: usize, const MR: usize>(
    a: *const u8,
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
    // SAFETY (whole function): `Layer::pack` sizes `w8` as k/4 groups × NV·64 bytes and every per-lane
    // array as NV·16; `a` reads stay inside the caller's checked buffer.
    unsafe {
        let bias: [__m512i; NV] = std::array::from_fn(|v| _mm512_loadu_si512(b.bias.as_ptr().add(v * LANES).cast()));
        // Whole tiles, then pairs of rows: no tile computes more than one row past the end.
        let mut r0 = 0;
        while r0 + MR <= rows {
            let acc = accumulate::<NV, MR>(bias, a.add(r0 * lda), lda, k, b.w8.as_ptr());
            store::<NV, MR>(acc, r0, rows, b, out);
            r0 += MR;
        }
        while r0 < rows {
            let acc = accumulate::<NV, 2>(bias, a.add(r0 * lda), lda, k, b.w8.as_ptr());
            store::<NV, 2>(acc, r0, rows, b, out);
            r0 += 2;
        }
    }
}

/// A block-sparse block of 16 or 32 channels: only its listed k/4 groups are multiplied.
#[inline(always)]
unsafe fn sparse_tiles<const NV: usize, const MR: usize>(
    a: *const u8,
    lda: usize,
    rows: usize,
    groups: &[u32],
    b: &Block,
    out: &mut Out,
) {
    const {
        assert!(
            MR.is_multiple_of(2) && MR <= crate::backend::cpu::int8::SLACK_ROWS,
            "a tile: whole row pairs (fused pool), within the slack rows"
        )
    };
    // SAFETY: `w8` holds NV 64-byte vectors per listed group (`Layer::pack` makes sparse VNNI blocks
    // of 1 or 2 vectors only); group offsets are inside the padded reduction, which the caller's
    // bounds cover.
    unsafe {
        let bias: [__m512i; NV] = std::array::from_fn(|v| _mm512_loadu_si512(b.bias.as_ptr().add(v * LANES).cast()));
        // Whole tiles, then pairs of rows, as in `tiles` (conv3's 26 steps: 3 tiles and a pair, not 4 tiles).
        let mut r0 = 0;
        while r0 + MR <= rows {
            let acc = accumulate_sparse::<NV, MR>(bias, a.add(r0 * lda), lda, groups, b.w8.as_ptr());
            store::<NV, MR>(acc, r0, rows, b, out);
            r0 += MR;
        }
        while r0 < rows {
            let acc = accumulate_sparse::<NV, 2>(bias, a.add(r0 * lda), lda, groups, b.w8.as_ptr());
            store::<NV, 2>(acc, r0, rows, b, out);
            r0 += 2;
        }
    }
}

#[inline(always)]
unsafe fn accumulate_sparse<const NV: usize, const MR: usize>(
    bias: [__m512i; NV],
    a: *const u8,
    lda: usize,
    groups: &[u32],
    w: *const i8,
) -> [[__m512i; NV]; MR] {
    // SAFETY: the caller's bounds (see `sparse_tiles`).
    unsafe {
        let mut acc = [bias; MR];
        for (i, &g) in groups.iter().enumerate() {
            let w: [__m512i; NV] = std::array::from_fn(|v| _mm512_loadu_si512(w.add((i * NV + v) * 64).cast()));
            let ap = a.add(4 * g as usize);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(ap.add(r * lda).cast::<i32>().read_unaligned());
                for v in 0..NV {
                    acc_r[v] = _mm512_dpbusd_epi32(acc_r[v], x, w[v]);
                }
            }
        }
        acc
    }
}

/// One register tile: `MR` rows from `a` (stride `lda`) against `k/4` packed weight groups. Returned
/// by value so that the accumulators stay in registers (a borrowed array made LLVM store them to the
/// stack on every step).
#[inline(always)]
unsafe fn accumulate<const NV: usize, const MR: usize>(
    bias: [__m512i; NV],
    a: *const u8,
    lda: usize,
    k: usize,
    w: *const i8,
) -> [[__m512i; NV]; MR] {
    // SAFETY: the caller's bounds (see `tiles`).
    unsafe {
        let mut acc = [bias; MR];
        let (mut ap, mut wp) = (a, w);
        for _ in 0..k / 4 {
            let w: [__m512i; NV] = std::array::from_fn(|v| _mm512_loadu_si512(wp.add(v * 64).cast()));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_epi32(ap.add(r * lda).cast::<i32>().read_unaligned());
                for v in 0..NV {
                    acc_r[v] = _mm512_dpbusd_epi32(acc_r[v], x, w[v]);
                }
            }
            ap = ap.add(4);
            wp = wp.add(NV * 64);
        }
        acc
    }
}

/// Lanes of vector `v` of a block that hold real channels, as a store mask.
#[inline(always)]
fn lane_mask(b: &Block, v: usize) -> u16 {
    let valid = b.width.saturating_sub(v * LANES).min(LANES);
    ((1u32 << valid) - 1) as u16
}

#[inline(always)]
unsafe fn store<const NV: usize, const MR: usize>(
    acc: [[__m512i; NV]; MR],
    r0: usize,
    rows: usize,
    b: &Block,
    out: &mut Out,
) {
    // SAFETY: stores are masked to real channels and limited to real rows of `dst`, whose length the
    // pipeline sizes as rows × ldd.
    unsafe {
        match out {
            Out::Acc { dst, ldd } => {
                for (r, acc_r) in acc.iter().enumerate().take(rows.saturating_sub(r0)) {
                    for (v, &x) in acc_r.iter().enumerate() {
                        let p = dst.as_mut_ptr().add((r0 + r) * *ldd + b.col0 + v * LANES);
                        _mm512_mask_storeu_epi32(p.cast(), lane_mask(b, v), x);
                    }
                }
            }
            Out::Requant { dst, ldd, z_out, relu, pool } => {
                let (z, relu, ldd) = (*z_out, *relu, *ldd);
                let (out_rows, out0) = if *pool { (rows / 2, r0 / 2) } else { (rows, r0) };
                let n_out = out_rows.saturating_sub(out0);
                let base = dst.as_mut_ptr();
                let at = |i: usize, v: usize| base.add((out0 + i) * ldd + b.col0 + v * LANES);
                let q = Requantize { n_out, z_out: z, relu, pool: *pool };
                // Small tiles (at most 16 accumulators: the sparse ones) stay in registers when the
                // epilogue reads them by value; the dense tiles' 24 spill either way, and run faster
                // reading one copy in memory (measured: 5 % on the dense model, 3 % on the sparse).
                if NV * MR <= 16 {
                    q.tile::<NV, MR>(move |r, v| acc[r][v], b, at);
                } else {
                    let acc = &acc;
                    q.tile::<NV, MR>(move |r, v| acc[r][v], b, at);
                }
            }
        }
    }
}

/// What the epilogue of one tile needs besides its accumulators.
struct Requantize {
    /// Output rows of the tile that exist.
    n_out: usize,
    z_out: u8,
    relu: bool,
    pool: bool,
}

impl Requantize {
    /// Picks the requantization (pool, shift range, whole tile or not) and runs it. Constant loop
    /// bounds and modes (const generics) let LLVM unroll the epilogue.
    #[inline(always)]
    unsafe fn tile<const NV: usize, const MR: usize>(
        &self,
        acc: impl Fn(usize, usize) -> __m512i,
        b: &Block,
        at: impl Fn(usize, usize) -> *mut u8,
    ) {
        let mode = if b.high_word {
            HIGH_WORD
        } else if b.narrow {
            NARROW
        } else {
            WIDE
        };
        // SAFETY: forwarded from `store`.
        unsafe {
            match (self.pool, mode) {
                (true, HIGH_WORD) => self.rows::<NV, MR, true, HIGH_WORD>(acc, b, at),
                (true, NARROW) => self.rows::<NV, MR, true, NARROW>(acc, b, at),
                (true, _) => self.rows::<NV, MR, true, WIDE>(acc, b, at),
                (false, HIGH_WORD) => self.rows::<NV, MR, false, HIGH_WORD>(acc, b, at),
                (false, NARROW) => self.rows::<NV, MR, false, NARROW>(acc, b, at),
                (false, _) => self.rows::<NV, MR, false, WIDE>(acc, b, at),
            }
        }
    }

    /// Most tiles are whole — every row exists, every lane is a channel — and take a path without a
    /// test per row or store: the tests, not the arithmetic, were most of a sparse tile's epilogue.
    #[inline(always)]
    unsafe fn rows<const NV: usize, const MR: usize, const POOL: bool, const MODE: u8>(
        &self,
        acc: impl Fn(usize, usize) -> __m512i,
        b: &Block,
        at: impl Fn(usize, usize) -> *mut u8,
    ) {
        let whole = self.n_out >= if POOL { MR / 2 } else { MR } && b.width == NV * LANES;
        // SAFETY: forwarded; a whole tile has every row and lane `requant_rows` writes.
        unsafe {
            if whole {
                requant_rows::<NV, MR, POOL, MODE, true>(acc, self, b, at);
            } else {
                requant_rows::<NV, MR, POOL, MODE, false>(acc, self, b, at);
            }
        }
    }
}

/// How a block requantizes: 64-bit products and clamp (any shift), 64-bit products with a 32-bit
/// clamp (every shift ≥ 32), or the products' high words alone (every shift ≥ 33).
const WIDE: u8 = 0;
const NARROW: u8 = 1;
const HIGH_WORD: u8 = 2;

/// Requantizes a tile's rows (pairs of rows under a pool) that exist (`i < n_out`) and stores them
/// at `at(row, vector)`; `acc(row, vector)` reads the accumulators.
#[inline(always)]
unsafe fn requant_rows<const NV: usize, const MR: usize, const POOL: bool, const MODE: u8, const WHOLE: bool>(
    acc: impl Fn(usize, usize) -> __m512i,
    q: &Requantize,
    b: &Block,
    at: impl Fn(usize, usize) -> *mut u8,
) {
    // SAFETY: `at` points inside `dst` for every existing row; stores are masked to real channels,
    // except in whole tiles, where every lane is one (`Requantize::rows`).
    unsafe {
        let (z, relu) = (q.z_out as i64, q.relu);
        let (lo, hi) = (_mm512_set1_epi64(if relu { 0 } else { -z }), _mm512_set1_epi64(255 - z));
        let zv = _mm512_set1_epi32(z as i32);
        let lo32 = _mm512_set1_epi32(if relu { z as i32 } else { 0 });
        // Channel vectors outermost: each loads its requantization parameters once per tile.
        #[allow(clippy::needless_range_loop)] // `v` indexes the accumulators, the block and the output alike
        for v in 0..NV {
            let params = Params::load(b, v);
            let mask = lane_mask(b, v);
            for i in 0..if POOL { MR / 2 } else { MR } {
                if !WHOLE && i >= q.n_out {
                    break;
                }
                let x = if POOL { _mm512_max_epi32(acc(2 * i, v), acc(2 * i + 1, v)) } else { acc(i, v) };
                let q = match MODE {
                    HIGH_WORD => requant_high_word(x, &params, lo32, zv),
                    NARROW => requant_narrow(x, &params, lo32, zv),
                    _ => requant(x, &params, lo, hi, zv),
                };
                // A masked byte store (`vpmovdb` to memory) is slow on AMD: only partial vectors take it.
                match mask {
                    _ if WHOLE => _mm_storeu_si128(at(i, v).cast(), q),
                    u16::MAX => _mm_storeu_si128(at(i, v).cast(), q),
                    mask => _mm_mask_storeu_epi8(at(i, v).cast(), mask, q),
                }
            }
        }
    }
}

/// One vector's per-channel requantization parameters, in registers.
struct Params {
    m: __m512i,
    m_odd: __m512i,
    round_even: __m512i,
    round_odd: __m512i,
    shift_even: __m512i,
    shift_odd: __m512i,
    shift_high: __m512i,
    round_high: __m512i,
}

impl Params {
    #[inline(always)]
    unsafe fn load(b: &Block, v: usize) -> Params {
        // SAFETY: per-lane arrays hold NV·16 (mult) and NV·8 (even/odd) entries.
        unsafe {
            let half = |p: &Vec<i64>| _mm512_loadu_si512(p.as_ptr().add(v * LANES / 2).cast());
            let m = _mm512_loadu_si512(b.mult.as_ptr().add(v * LANES).cast());
            Params {
                m,
                m_odd: _mm512_srli_epi64(m, 32),
                round_even: half(&b.round_even),
                round_odd: half(&b.round_odd),
                shift_even: half(&b.shift_even),
                shift_odd: half(&b.shift_odd),
                shift_high: _mm512_loadu_si512(b.shift_high.as_ptr().add(v * LANES).cast()),
                round_high: _mm512_loadu_si512(b.round_high.as_ptr().add(v * LANES).cast()),
            }
        }
    }
}

/// `requant` for shifts ≥ 31, where the shifted value fits i32: its low 32 bits are the value, the
/// clamp to [lo, 255] happens in 32 bits, the upper bound by an unsigned saturating narrow.
#[inline(always)]
unsafe fn requant_narrow(acc: __m512i, p: &Params, lo: __m512i, z: __m512i) -> __m128i {
    // SAFETY: register-only AVX-512 operations.
    unsafe {
        let even = _mm512_mul_epi32(acc, p.m);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), p.m_odd);
        let even = _mm512_srav_epi64(_mm512_add_epi64(even, p.round_even), p.shift_even);
        let odd = _mm512_srav_epi64(_mm512_add_epi64(odd, p.round_odd), p.shift_odd);
        let joined = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
        _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_add_epi32(joined, z), lo))
    }
}

/// `requant` for shifts ≥ 33 (`int8::HIGH_WORD_SHIFT` proves it exact): the high 32 bits of the
/// even and odd lanes' products gathered into one vector, then rounded and shifted in 32 bits —
/// three operations fewer than `requant_narrow`, which matters most where few multiply-adds remain
/// per output (block-sparse layers).
#[inline(always)]
unsafe fn requant_high_word(acc: __m512i, p: &Params, lo: __m512i, z: __m512i) -> __m128i {
    // SAFETY: register-only AVX-512 operations.
    unsafe {
        let even = _mm512_mul_epi32(acc, p.m);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), p.m_odd);
        // Lane j takes the high dword of its product: dword j + 1 of `even` (j even), j of `odd`.
        // (Indices 16–31 name `odd`'s dwords; `_mm512_set_epi32` lists lane 15 first.)
        let high_dwords = _mm512_set_epi32(31, 15, 29, 13, 27, 11, 25, 9, 23, 7, 21, 5, 19, 3, 17, 1);
        let high = _mm512_permutex2var_epi32(even, high_dwords, odd);
        let shifted = _mm512_srav_epi32(_mm512_add_epi32(high, p.round_high), p.shift_high);
        _mm512_cvtusepi32_epi8(_mm512_max_epi32(_mm512_add_epi32(shifted, z), lo))
    }
}

/// 16 accumulators → 16 u8: `clamp(((acc·M + 2^(sh−1)) >> sh), lo, hi) + z` in i64 per lane.
#[inline(always)]
unsafe fn requant(acc: __m512i, p: &Params, lo: __m512i, hi: __m512i, z: __m512i) -> __m128i {
    // SAFETY: register-only AVX-512 operations.
    unsafe {
        let even = _mm512_mul_epi32(acc, p.m);
        let odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), p.m_odd);
        let even = _mm512_srav_epi64(_mm512_add_epi64(even, p.round_even), p.shift_even);
        let odd = _mm512_srav_epi64(_mm512_add_epi64(odd, p.round_odd), p.shift_odd);
        let even = _mm512_min_epi64(_mm512_max_epi64(even, lo), hi);
        let odd = _mm512_min_epi64(_mm512_max_epi64(odd, lo), hi);
        let joined = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
        _mm512_cvtepi32_epi8(_mm512_add_epi32(joined, z))
    }
}
