//! int8 on the CPU: weights packed once per plan for the chosen instruction set, zero points folded
//! into the biases (padding rows then hold z_in), and one GEMM driver per family whose epilogue
//! requantizes in registers (with ReLU and the max-pool fused) exactly as docs/NUMERICS.md B says.

use super::isa::Isa;
use crate::model::quant::Requant;

/// Reduction elements are packed in groups of 4 (one `vpdpbusd` lane); layers pad K with zero weights.
pub const K_GROUP: usize = 4;

/// Where a GEMM's outputs go.
pub enum Out<'a> {
    /// Requantized u8 at `dst[row · ldd + col]`; with `pool`, rows 2i and 2i+1 become row i (the max of
    /// the accumulators, then one requantization: same bits, since requantization is monotone).
    Requant { dst: &'a mut [u8], ldd: usize, z_out: u8, relu: bool, pool: bool },
    /// Raw i32 accumulators (the heads) at `dst[row · ldd + col]`.
    Acc { dst: &'a mut [i32], ldd: usize },
}

/// Output channels `col0 .. col0 + width` of a layer, packed for one kernel family.
pub struct Block {
    pub col0: usize,
    pub width: usize,
    /// SIMD vectors of output channels (`lanes` each).
    pub nv: usize,
    /// VNNI: `[k/4][nv·16][4]` s8. AVX2: `[k/2][nv·8][2]` i16 (widened). Portable: `[width][k]` s8.
    pub w8: Vec<i8>,
    pub w16: Vec<i16>,
    /// Zero-point-folded bias per lane (0 in padding lanes).
    pub bias: Vec<i32>,
    /// Requantization per lane, split into even and odd lanes for 32×32→64-bit multiplies.
    pub mult: Vec<i32>,
    pub shift_even: Vec<i64>,
    pub shift_odd: Vec<i64>,
    pub round_even: Vec<i64>,
    pub round_odd: Vec<i64>,
    /// Portable only: the stored (M, sh) per channel.
    pub requant: Vec<Requant>,
    /// Every channel's shift ≥ `NARROW_SHIFT`: the kernels may drop the i64 clamp and clamp in 32 bits.
    pub narrow: bool,
    /// Every channel's shift ≥ `HIGH_WORD_SHIFT`: the VNNI kernels round and shift the high 32 bits
    /// of acc·M alone (`shift_high` = sh − 32 and `round_high` = 2^(sh − 33) per lane).
    pub high_word: bool,
    pub shift_high: Vec<i32>,
    pub round_high: Vec<i32>,
    /// Block-sparse layers: the groups (VNNI: k/4, AVX2: k/2) with any non-zero weight in this block,
    /// whose weights alone `w8` / `w16` hold; all-zero groups are skipped.
    pub groups: Option<Vec<u32>>,
}

/// A weighted layer packed for one family: `acc[o] = bias′[o] + Σ_k w[o][k]·a[k]` over raw u8.
pub struct Layer {
    pub n: usize,
    /// Padded reduction length (a multiple of 4).
    pub k: usize,
    pub blocks: Vec<Block>,
    /// Share of the multiply-adds executed (below 1 when zero blocks are skipped).
    pub density: f64,
}

/// With sh ≥ 32, |(acc·M + 2^(sh−1)) >> sh| ≤ 2^30 for any i32 acc and M ≤ 2^31 − 1, so adding a
/// zero point (≤ 255) cannot overflow i32 either. (At sh = 31 the shifted value still fits, but adding
/// the zero point can wrap: acc = M = 2^31 − 1 gives 2^31 − 2.)
pub const NARROW_SHIFT: u8 = 32;

/// From this shift on, `(acc·M + 2^(sh−1)) >> sh` equals `(H + 2^(sh−33)) >> (sh − 32)` with
/// H = ⌊acc·M / 2^32⌋: writing acc·M = H·2^32 + L (0 ≤ L < 2^32), the dropped L/2^32 is a fraction
/// below 1 added to the integer numerator H + 2^(sh−33), which cannot move the floor of its division
/// by 2^(sh−32). −2^30 ≤ H < 2^30 and 2^(sh−33) ≤ 2^29 (sh ≤ `MAX_SHIFT` = 62), so the sum fits an i32.
pub const HIGH_WORD_SHIFT: u8 = 33;

/// Skipping zero blocks pays once at least this share of a layer's weight groups is zero.
const SPARSE_FROM: f64 = 0.125;

/// Whether two neighbouring 16-channel strips of a block-sparse layer (from `col0`) are better
/// multiplied together, over the union of their non-zero groups: a group then costs one broadcast per
/// row for two `vpdpbusd`, against one each apart. On a VNNI core the broadcasts, not the
/// multiply-adds, bound a one-strip sparse tile, so the union pays while it is at most 4/3 of the
/// strips' groups on average — blocks of 32 output channels share every group.
fn shares_groups(group_nonzero: &dyn Fn(usize, usize) -> bool, col0: usize, groups: usize) -> bool {
    let (mut apart, mut union) = (0, 0);
    for g in 0..groups {
        let (a, b) = (group_nonzero(col0, g), group_nonzero(col0 + 16, g));
        apart += usize::from(a) + usize::from(b);
        union += usize::from(a || b);
    }
    // Per row: apart, a broadcast and a multiply-add per group; together, a broadcast and two.
    3 * union < 2 * apart
}

impl Layer {
    /// `w` is `[n][k_real]` s8 in the kernel's reduction order; `zeros[k]` is the zero point each
    /// reduction element is read with (folded into the bias).
    pub fn pack(isa: Isa, w: &[i8], bias: &[i32], zeros: &[u8], requant: &[Requant]) -> Layer {
        let n = bias.len();
        let k_real = zeros.len();
        assert_eq!(w.len(), n * k_real, "weights are [n][k]");
        let k = k_real.div_ceil(K_GROUP) * K_GROUP;
        let folded = fold_zero_points(w, bias, zeros);
        let weight = |o: usize, kk: usize| if o < n && kk < k_real { w[o * k_real + kk] } else { 0 };
        // The unit of work of one weight vector: 16 channels × 4 elements (VNNI), 8 × 2 (AVX2).
        let (gc, gk) = if isa == Isa::Avx2 { (8, 2) } else { (16, 4) };
        let group_nonzero =
            |col0: usize, g: usize| (col0..col0 + gc).any(|o| (0..gk).any(|i| weight(o, gk * g + i) != 0));
        let all_groups = n.div_ceil(gc) * (k / gk);
        let nonzero =
            (0..n.div_ceil(gc)).map(|b| (0..k / gk).filter(|&g| group_nonzero(gc * b, g)).count()).sum::<usize>();
        let sparse = isa != Isa::Portable && all_groups > 0 && 1.0 - nonzero as f64 / all_groups as f64 >= SPARSE_FROM;
        let (lanes, max_nv) = match isa {
            Isa::Avx512Vnni if sparse => (16, 2),
            Isa::Avx512Vnni => (16, 4),
            Isa::Avx2 if sparse => (8, 1),
            Isa::Avx2 => (8, 4),
            Isa::Portable => (n.max(1), 1),
        };
        let mut blocks = Vec::new();
        let mut col0 = 0;
        while col0 < n {
            let mut nv = (n - col0).div_ceil(lanes).min(max_nv);
            if isa == Isa::Avx2 && nv == 3 {
                nv = 4; // the AVX2 tiles come in 1, 2 and 4 vectors
            }
            if isa == Isa::Avx512Vnni && sparse && nv == 2 && !shares_groups(&group_nonzero, col0, k / 4) {
                nv = 1;
            }
            let width = (nv * lanes).min(n - col0);
            let cols = nv * lanes;
            let ch = |lane: usize| col0 + lane;
            let lane_vals = |f: &dyn Fn(usize) -> i64| -> Vec<i64> {
                (0..cols).map(|l| if ch(l) < n { f(ch(l)) } else { 0 }).collect()
            };
            let (mut w8, mut w16) = (Vec::new(), Vec::new());
            let mut groups = None;
            match isa {
                Isa::Avx512Vnni if sparse => {
                    let kept: Vec<u32> = (0..k / 4)
                        .filter(|&g| (0..nv).any(|v| group_nonzero(col0 + v * lanes, g)))
                        .map(|g| g as u32)
                        .collect();
                    for &g in &kept {
                        for l in 0..cols {
                            w8.extend((0..4).map(|i| weight(ch(l), 4 * g as usize + i)));
                        }
                    }
                    groups = Some(kept);
                }
                Isa::Avx512Vnni => {
                    for g in 0..k / 4 {
                        for l in 0..cols {
                            w8.extend((0..4).map(|i| weight(ch(l), 4 * g + i)));
                        }
                    }
                }
                Isa::Avx2 if sparse => {
                    let kept: Vec<u32> = (0..k / 2).filter(|&g| group_nonzero(col0, g)).map(|g| g as u32).collect();
                    for &g in &kept {
                        for l in 0..cols {
                            w16.extend((0..2).map(|i| weight(ch(l), 2 * g as usize + i) as i16));
                        }
                    }
                    groups = Some(kept);
                }
                Isa::Avx2 => {
                    for g in 0..k / 2 {
                        for l in 0..cols {
                            w16.extend((0..2).map(|i| weight(ch(l), 2 * g + i) as i16));
                        }
                    }
                }
                Isa::Portable => {
                    for l in 0..width {
                        w8.extend((0..k).map(|kk| weight(ch(l), kk)));
                    }
                }
            }
            let rq = |o: usize| requant.get(o).copied().unwrap_or(Requant { multiplier: 1, shift: 1 });
            let shift = lane_vals(&|o| rq(o).shift as i64);
            let round: Vec<i64> = shift.iter().map(|&s| if s > 0 { 1 << (s - 1) } else { 0 }).collect();
            let even = |v: &[i64]| v.iter().step_by(2).copied().collect::<Vec<i64>>();
            let odd = |v: &[i64]| v.iter().skip(1).step_by(2).copied().collect::<Vec<i64>>();
            blocks.push(Block {
                col0,
                width,
                nv,
                w8,
                w16,
                bias: lane_vals(&|o| folded[o] as i64).into_iter().map(|b| b as i32).collect(),
                mult: lane_vals(&|o| rq(o).multiplier as i64).into_iter().map(|m| m as i32).collect(),
                narrow: (col0..col0 + width).all(|o| rq(o).shift >= NARROW_SHIFT),
                high_word: (col0..col0 + width).all(|o| rq(o).shift >= HIGH_WORD_SHIFT),
                shift_high: shift.iter().map(|&s| (s - 32).max(0) as i32).collect(),
                round_high: shift.iter().map(|&s| if s >= 33 { 1 << (s - 33) } else { 0 }).collect(),
                shift_even: even(&shift),
                shift_odd: odd(&shift),
                round_even: even(&round),
                round_odd: odd(&round),
                requant: (col0..col0 + width).map(rq).collect(),
                groups,
            });
            col0 += width;
        }
        // What the kernels execute: a two-strip block multiplies the union of its strips' groups.
        let executed: usize = blocks.iter().map(|b| b.groups.as_ref().map_or(0, |g| g.len() * b.nv)).sum();
        let density = if sparse { executed as f64 / all_groups as f64 } else { 1.0 };
        Layer { n, k, blocks, density }
    }

    /// Runs the layer on `rows` rows of `a` (row r at `a[r·lda ..][.. k]`; the buffer must stay
    /// readable for whole register tiles past `rows`, see `SLACK_ROWS`). `wide` is scratch for AVX2.
    pub fn run(&self, isa: Isa, a: &[u8], lda: usize, rows: usize, wide: &mut Vec<i16>, out: &mut Out) {
        let needed = (rows + SLACK_ROWS - 1) * lda + self.k;
        assert!(a.len() >= needed, "activation buffer of {} bytes, kernel reads {needed}", a.len());
        // The kernels store through raw pointers: every row they write must be inside `dst`.
        let (written, ldd, dst_len) = match out {
            Out::Requant { dst, ldd, pool, .. } => (if *pool { rows / 2 } else { rows }, *ldd, dst.len()),
            Out::Acc { dst, ldd } => (rows, *ldd, dst.len()),
        };
        assert!(ldd >= self.n && (written == 0 || dst_len >= (written - 1) * ldd + self.n), "output buffer too small");
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the plan only picks a family the CPU has (`Isa::require`), and the assert above
            // keeps every read of whole register tiles inside `a`.
            Isa::Avx512Vnni => unsafe { super::vnni::gemm(a, lda, rows, self, out) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                wide.clear();
                wide.extend(a[..needed].iter().map(|&x| x as i16));
                // SAFETY: as above, on the widened copy of the same length.
                unsafe { super::avx2::gemm(wide, lda, rows, self, out) }
            }
            _ => portable(a, lda, rows, self, out),
        }
    }
}

/// The biases with the zero-point terms folded in, for `w` `[n][k]` read with `zeros[k]`:
/// bias′ = bias − Σ_k w·z, in wrapping i32 like every other partial sum (docs/NUMERICS.md D), so that
/// kernels accumulate Σ w·x on raw u8.
pub fn fold_zero_points(w: &[i8], bias: &[i32], zeros: &[u8]) -> Vec<i32> {
    let k = zeros.len();
    (0..bias.len())
        .map(|o| {
            w[o * k..(o + 1) * k].iter().zip(zeros).fold(bias[o], |a, (&w, &z)| a.wrapping_sub(w as i32 * z as i32))
        })
        .collect()
}

/// Rows a kernel may read past the last real row (its register tile height, at most).
pub const SLACK_ROWS: usize = 16;

/// The portable family: one row and one channel at a time, exactly the folded formula.
fn portable(a: &[u8], lda: usize, rows: usize, layer: &Layer, out: &mut Out) {
    let b = &layer.blocks[0];
    let k = layer.k;
    let acc = |r: usize, o: usize| -> i32 {
        let (x, w) = (&a[r * lda..r * lda + k], &b.w8[o * k..(o + 1) * k]);
        x.iter().zip(w).fold(b.bias[o], |s, (&x, &w)| s.wrapping_add(x as i32 * w as i32))
    };
    match out {
        Out::Acc { dst, ldd } => {
            for r in 0..rows {
                for o in 0..layer.n {
                    dst[r * *ldd + o] = acc(r, o);
                }
            }
        }
        Out::Requant { dst, ldd, z_out, relu, pool } => {
            let step = if *pool { 2 } else { 1 };
            for r in 0..rows / step {
                for o in 0..layer.n {
                    let v = if *pool { acc(2 * r, o).max(acc(2 * r + 1, o)) } else { acc(r, o) };
                    dst[r * *ldd + o] = b.requant[o].apply(v, *z_out, *relu);
                }
            }
        }
    }
}

use super::isa::per_isa;
use super::pipeline::{HeadSlice, KernelScratch, Stages};
use super::program::Program;
use crate::backend::reference::dense_f32;
use crate::model::quant::ActQuant;
use crate::model::{Model, Precision};

struct Conv {
    layer: Layer,
    in_c: usize,
    /// Convolution rows computed: every step, or whole pairs when a pool follows.
    rows: usize,
    z_in: u8,
    z_out: u8,
    relu: bool,
    pool: bool,
}

struct Dense {
    layer: Layer,
    z_out: u8,
    relu: bool,
}

/// The heads as packed: all int8 ones as one GEMM over the trunk (their weights stacked ltv, churn,
/// segment), otherwise one by one.
enum Heads {
    Fused { layer: Layer, widths: [usize; 3] },
    Each(Vec<Head>),
}

enum Head {
    Int8(Layer),
    /// A float head of an int8 model (`--f32-heads`): the reference's own loop on the dequantized input.
    Float {
        w: Vec<f32>,
        b: Vec<f32>,
        input: Vec<ActQuant>,
    },
}

/// The int8 model, packed for one instruction-set family.
pub struct Int8Stages {
    isa: Isa,
    seq: ActQuant,
    stat: ActQuant,
    convs: Vec<Conv>,
    gap: (Requant, u8, u8),
    denses: Vec<Dense>,
    heads: Heads,
}

per_isa!(fn quantize_row_for(x: &[f32], q: ActQuant, out: &mut [u8]) => quantize_row);
per_isa!(fn column_sums_for(src: &[u8], channels: usize, start: i32, sums: &mut [i32]) => column_sums);
per_isa!(fn requant_all_for(sums: &[i32], requant: Requant, z_out: u8, dst: &mut [u8]) => requant_all);

/// `quantize_input` over a row, written so that it vectorizes: the float clamp (max/min ignore a NaN
/// operand, so the result is always inside [−256, 512]) makes the conversion a plain truncation.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` would pass a NaN through; max/min cannot return one
fn quantize_row(x: &[f32], q: ActQuant, out: &mut [u8]) {
    for (o, &x) in out.iter_mut().zip(x) {
        let r = (x * q.inv_scale).round_ties_even().max(-256.0).min(512.0);
        // SAFETY: r is an integer-valued float in [−256, 512], which i32 holds exactly.
        let r: i32 = unsafe { r.to_int_unchecked() };
        *o = (r + q.zero_point as i32).clamp(0, 255) as u8;
    }
}

/// Per-channel sums of a `[steps, channels]` u8 tensor plus `start`, into `sums`; 64 channels at a
/// time in a local array so that the partial sums stay in registers across the rows.
#[inline(always)]
fn column_sums(src: &[u8], channels: usize, start: i32, sums: &mut [i32]) {
    const CHUNK: usize = 64;
    for c0 in (0..channels).step_by(CHUNK) {
        let width = CHUNK.min(channels - c0);
        let mut acc = [start; CHUNK];
        for row in src.chunks_exact(channels) {
            match <&[u8; CHUNK]>::try_from(&row[c0..c0 + width]) {
                // A fixed-length loop: LLVM keeps `acc` in four zmm registers.
                Ok(part) => {
                    for (a, &x) in acc.iter_mut().zip(part) {
                        *a = a.wrapping_add(x as i32);
                    }
                }
                Err(_) => {
                    for (a, &x) in acc.iter_mut().zip(&row[c0..c0 + width]) {
                        *a = a.wrapping_add(x as i32);
                    }
                }
            }
        }
        sums[c0..c0 + width].copy_from_slice(&acc[..width]);
    }
}

/// One requantization (the pool's) over a vector of accumulators.
#[inline(always)]
fn requant_all(sums: &[i32], requant: Requant, z_out: u8, dst: &mut [u8]) {
    for (d, &s) in dst.iter_mut().zip(sums) {
        *d = requant.apply(s, z_out, false);
    }
}

/// Head `h`'s columns of the fused heads' `[rows, ld]` outputs (heads side by side, `widths` wide)
/// into its own `[rows, widths[h]]`.
pub fn split_columns<T: Copy>(fused: &[T], ld: usize, widths: &[usize; 3], h: usize, dst: &mut [T]) {
    let start: usize = widths[..h].iter().sum();
    for (row, out) in fused.chunks_exact(ld).zip(dst.chunks_exact_mut(widths[h])) {
        out.copy_from_slice(&row[start..start + widths[h]]);
    }
}

/// `[C, T]` channel-major → `[T, C]` time-major.
pub fn transpose<T: Copy>(src: &[T], channels: usize, dst: &mut [T]) {
    let steps = src.len() / channels;
    for (c, row) in src.chunks_exact(steps).enumerate() {
        for (t, &x) in row.iter().enumerate() {
            dst[t * channels + c] = x;
        }
    }
}

/// `transpose` for the presets' four sequence channels: 16 steps at a time, the four rows' bytes
/// interleaved with SSE2 unpacks (baseline x86-64), the tail one step at a time.
pub fn transpose_4_channels(src: &[u8], dst: &mut [u8]) {
    let steps = src.len() / 4;
    assert!(dst.len() >= steps * 4, "destination holds every step");
    let rows: [&[u8]; 4] = std::array::from_fn(|c| &src[c * steps..(c + 1) * steps]);
    let mut t = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while t + 16 <= steps {
            // SAFETY: 16 bytes of each row from step t and 64 bytes of `dst` from 4t are in bounds
            // (checked by the loop condition and the assert); SSE2 is part of x86-64.
            unsafe {
                let [r0, r1, r2, r3] = rows.map(|r| _mm_loadu_si128(r.as_ptr().add(t).cast()));
                let (lo01, hi01) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
                let (lo23, hi23) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
                let out = dst.as_mut_ptr().add(4 * t);
                _mm_storeu_si128(out.cast(), _mm_unpacklo_epi16(lo01, lo23));
                _mm_storeu_si128(out.add(16).cast(), _mm_unpackhi_epi16(lo01, lo23));
                _mm_storeu_si128(out.add(32).cast(), _mm_unpacklo_epi16(hi01, hi23));
                _mm_storeu_si128(out.add(48).cast(), _mm_unpackhi_epi16(hi01, hi23));
            }
            t += 16;
        }
    }
    for t in t..steps {
        for (c, row) in rows.iter().enumerate() {
            dst[4 * t + c] = row[t];
        }
    }
}

/// A conv weight `[O][C][K]` in the kernels' reduction order `[O][K][C]` (a window of a time-major
/// input is `K` consecutive rows of `C` channels).
pub fn conv_weights_kc<T: Copy>(w: &[T], in_c: usize, k: usize) -> Vec<T> {
    w.chunks(in_c * k).flat_map(|o| (0..k).flat_map(move |j| (0..in_c).map(move |c| o[c * k + j]))).collect()
}

impl Int8Stages {
    pub fn new(isa: Isa, model: &Model, p: &Program) -> Int8Stages {
        let q = model.quantization().expect("validated int8 model");
        let (g, shapes) = (model.graph(), &model.shapes);
        let segments = q.segment_map(g, shapes).expect("validated at open");
        let node = |layer: &str| g.node(layer).expect("compiled from this graph");
        let z_of = |tensor: &str| q.activations[tensor].zero_point;
        let zeros_in =
            |layer: &str| -> Vec<ActQuant> { segments.per_element(&node(layer).inputs[0]).expect("u8 input") };
        let weights = |layer: &str| {
            (model.i8s(&format!("{layer}.weight")).into_owned(), model.i32s(&format!("{layer}.bias")).into_owned())
        };
        let requants = |layer: &str| q.layers[layer].requants();
        let convs = p
            .convs
            .iter()
            .map(|c| {
                let (w, b) = weights(&c.layer);
                let z_in = zeros_in(&c.layer)[0].zero_point;
                let w = conv_weights_kc(&w, c.in_c, c.kernel);
                let layer = Layer::pack(isa, &w, &b, &vec![z_in; c.in_c * c.kernel], &requants(&c.layer));
                let rows = if c.pool { c.t_conv / 2 * 2 } else { c.t_conv };
                Conv {
                    layer,
                    in_c: c.in_c,
                    rows,
                    z_in,
                    z_out: z_of(&node(&c.layer).output),
                    relu: c.relu,
                    pool: c.pool,
                }
            })
            .collect();
        let denses = p
            .denses
            .iter()
            .map(|d| {
                let (w, b) = weights(&d.layer);
                let zeros: Vec<u8> = zeros_in(&d.layer).iter().map(|a| a.zero_point).collect();
                let layer = Layer::pack(isa, &w, &b, &zeros, &requants(&d.layer));
                Dense { layer, z_out: z_of(&node(&d.layer).output), relu: d.relu }
            })
            .collect();
        let input = zeros_in(&p.heads[0].0);
        let zeros: Vec<u8> = input.iter().map(|a| a.zero_point).collect();
        let heads = if p.heads.iter().all(|(name, _)| model.layer_precision(name) == Precision::Int8) {
            let (mut w, mut b) = (Vec::new(), Vec::new());
            for (name, _) in &p.heads {
                let (hw, hb) = weights(name);
                w.extend(hw);
                b.extend(hb);
            }
            Heads::Fused { layer: Layer::pack(isa, &w, &b, &zeros, &[]), widths: p.heads.clone().map(|h| h.1) }
        } else {
            let head = |name: &str| match model.layer_precision(name) {
                Precision::Int8 => {
                    let (w, b) = weights(name);
                    Head::Int8(Layer::pack(isa, &w, &b, &zeros, &[]))
                }
                _ => Head::Float {
                    w: model.weights_f32(name),
                    b: model.f32s(&format!("{name}.bias")).into_owned(),
                    input: input.clone(),
                },
            };
            Heads::Each(p.heads.iter().map(|(name, _)| head(name)).collect())
        };
        let gap_in = zeros_in(&p.gap_layer)[0].zero_point;
        Int8Stages {
            isa,
            seq: q.activations[crate::model::graph::SEQ],
            stat: q.activations[crate::model::graph::STATIC],
            convs,
            gap: (requants(&p.gap_layer)[0], gap_in, z_of(&p.gap_output)),
            denses,
            heads,
        }
    }
}

impl Stages for Int8Stages {
    type Act = u8;

    fn pad(&self, conv: usize) -> u8 {
        self.convs[conv].z_in
    }

    fn load_seq(&self, seq: &[f32], channels: usize, dst: &mut [u8], scratch: &mut KernelScratch) {
        let staging = &mut scratch.staging;
        staging.resize(seq.len(), 0);
        quantize_row_for(self.isa, seq, self.seq, staging);
        if channels == 4 {
            transpose_4_channels(staging, dst);
        } else {
            transpose(staging, channels, dst);
        }
    }

    fn load_static(&self, stat: &[f32], dst: &mut [u8]) {
        quantize_row_for(self.isa, stat, self.stat, dst);
    }

    fn conv(&self, i: usize, src: &[u8], dst: &mut [u8], scratch: &mut KernelScratch) {
        let c = &self.convs[i];
        let ldd = c.layer.n;
        let mut out = Out::Requant { dst, ldd, z_out: c.z_out, relu: c.relu, pool: c.pool };
        c.layer.run(self.isa, src, c.in_c, c.rows, &mut scratch.wide, &mut out);
    }

    fn gap(&self, src: &[u8], steps: usize, dst: &mut [u8], scratch: &mut KernelScratch) {
        let (requant, z_in, z_out) = self.gap;
        let channels = dst.len();
        let sums = &mut scratch.sums;
        sums.resize(channels, 0);
        column_sums_for(
            self.isa,
            &src[..steps * channels],
            channels,
            (steps as i32).wrapping_mul(-(z_in as i32)),
            sums,
        );
        requant_all_for(self.isa, sums, requant, z_out, dst);
    }

    fn dense(
        &self,
        j: usize,
        src: &[u8],
        lda: usize,
        rows: usize,
        dst: &mut [u8],
        ldd: usize,
        scratch: &mut KernelScratch,
    ) {
        let d = &self.denses[j];
        let mut out = Out::Requant { dst, ldd, z_out: d.z_out, relu: d.relu, pool: false };
        d.layer.run(self.isa, src, lda, rows, &mut scratch.wide, &mut out);
    }

    fn heads(&self, src: &[u8], lda: usize, rows: usize, out: &mut [HeadSlice; 3], scratch: &mut KernelScratch) {
        match &self.heads {
            Heads::Fused { layer, widths } => {
                scratch.acc.resize(rows * layer.n, 0);
                layer.run(
                    self.isa,
                    src,
                    lda,
                    rows,
                    &mut scratch.wide,
                    &mut Out::Acc { dst: &mut scratch.acc, ldd: layer.n },
                );
                for (h, slot) in out.iter_mut().enumerate() {
                    let HeadSlice::Acc(dst) = slot else { unreachable!("int8 heads give accumulators") };
                    split_columns(&scratch.acc, layer.n, widths, h, dst);
                }
            }
            Heads::Each(heads) => {
                for (head, slot) in heads.iter().zip(out.iter_mut()) {
                    match (head, slot) {
                        (Head::Int8(layer), HeadSlice::Acc(dst)) => {
                            layer.run(self.isa, src, lda, rows, &mut scratch.wide, &mut Out::Acc { dst, ldd: layer.n });
                        }
                        (Head::Float { w, b, input }, HeadSlice::Logits(dst)) => {
                            let units = b.len();
                            for r in 0..rows {
                                scratch.real.clear();
                                scratch.real.extend(src[r * lda..].iter().zip(input).map(|(&q, a)| a.dequantize(q)));
                                dst[r * units..(r + 1) * units].copy_from_slice(&dense_f32(&scratch.real, w, b, units));
                            }
                        }
                        _ => unreachable!("head outputs are allocated by head_is_acc"),
                    }
                }
            }
        }
    }

    fn head_is_acc(&self, h: usize) -> bool {
        match &self.heads {
            Heads::Fused { .. } => true,
            Heads::Each(heads) => matches!(heads[h], Head::Int8(_)),
        }
    }

    fn densities(&self) -> Vec<f64> {
        let heads: Vec<f64> = match &self.heads {
            Heads::Fused { layer, .. } => vec![layer.density; 3],
            Heads::Each(heads) => heads.iter().map(|h| if let Head::Int8(l) = h { l.density } else { 1.0 }).collect(),
        };
        self.convs
            .iter()
            .map(|c| c.layer.density)
            .chain(self.denses.iter().map(|d| d.layer.density))
            .chain(heads)
            .collect()
    }

    fn to_u8(a: u8) -> Option<u8> {
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::quant::quantize_input;

    #[test]
    fn strips_that_share_their_groups_are_packed_together() {
        // 64 channels × 16 elements: channels 0–31 use groups 0 and 2, 32–47 group 1, 48–63 group 3.
        let (n, k) = (64, 16);
        let w: Vec<i8> = (0..n * k)
            .map(|i| {
                let (o, g) = (i / k, i % k / 4);
                i8::from(match o {
                    0..32 => g == 0 || g == 2,
                    32..48 => g == 1,
                    _ => g == 3,
                })
            })
            .collect();
        let requant = vec![Requant { multiplier: 1 << 30, shift: 40 }; n];
        let layer = Layer::pack(Isa::Avx512Vnni, &w, &vec![0; n], &vec![0; k], &requant);
        let blocks: Vec<_> = layer.blocks.iter().map(|b| (b.col0, b.nv, b.groups.clone())).collect();
        // The last two strips share nothing: apart they run 2 groups, together 2 groups × 2 strips.
        assert_eq!(blocks, [(0, 2, Some(vec![0, 2])), (32, 1, Some(vec![1])), (48, 1, Some(vec![3]))]);
        assert_eq!(layer.density, 6.0 / 16.0, "executed strip-groups of all");
    }

    #[test]
    fn vectorized_quantization_matches_the_contract() {
        let xs = [
            0.0,
            -0.0,
            1.5,
            2.5,
            -2.5,
            3.5,
            1e-40,
            -1e-40,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            127.49,
            -300.2,
            400.7,
            0.5,
            -0.5,
        ];
        for (inv_scale, zero_point) in [(1.0, 0u8), (1.0, 128), (0.37, 255), (3.0e38, 10), (1e-3, 77)] {
            let q = ActQuant { scale: 1.0 / inv_scale, inv_scale, zero_point };
            let mut out = vec![0u8; xs.len()];
            quantize_row(&xs, q, &mut out);
            let want: Vec<u8> = xs.iter().map(|&x| quantize_input(x, inv_scale, zero_point)).collect();
            assert_eq!(out, want, "inv_scale {inv_scale}, zero point {zero_point}");
        }
    }

    /// Every family's register epilogue against `Requant::apply` on extreme accumulators and
    /// multipliers: one channel per case, zero weights, the case's accumulator as the bias.
    #[test]
    fn every_family_requantizes_the_edge_cases_exactly() {
        let accs = [i32::MAX, i32::MIN, 0, 1, -1, 12_345, -12_345, 1 << 30, -(1 << 30)];
        let mixed =
            [(i32::MAX, 31), (i32::MAX, 32), (1 << 30, 31), (1, 1), (i32::MAX, 62), (1_234_567, 40), (i32::MAX, 1)];
        // A layer whose every shift is large takes the kernels' 32-bit clamp; at 31 it must not.
        let large = [(i32::MAX, 32), (1 << 30, 33), (i32::MAX, 62), (1_234_567, 40)];
        let at_31 = [(i32::MAX, 31), (1 << 30, 31), (1_500_000_000, 31)];
        // Every shift from 33: the VNNI kernels requantize from the product's high word alone.
        let high_word = [(i32::MAX, 33), (1 << 30, 33), (i32::MAX, 63), (1, 63), (1_234_567, 40), (i32::MAX, 34)];
        for rqs in [&mixed[..], &large[..], &at_31[..], &high_word[..]] {
            let (mut bias, mut requant) = (Vec::new(), Vec::new());
            for &acc in &accs {
                for &(multiplier, shift) in rqs {
                    bias.push(acc);
                    requant.push(Requant { multiplier, shift });
                }
            }
            let n = bias.len();
            let a = vec![7u8; (1 + SLACK_ROWS) * 4 + 4];
            for isa in Isa::available_all() {
                let layer = Layer::pack(isa, &vec![0i8; n], &bias, &[0], &requant);
                for z_out in [0u8, 2, 128, 255] {
                    for relu in [false, true] {
                        let mut dst = vec![0u8; n];
                        let mut out = Out::Requant { dst: &mut dst, ldd: n, z_out, relu, pool: false };
                        layer.run(isa, &a, 4, 1, &mut Vec::new(), &mut out);
                        let want: Vec<u8> = bias.iter().zip(&requant).map(|(&b, r)| r.apply(b, z_out, relu)).collect();
                        assert_eq!(dst, want, "{isa}, shifts {rqs:?}, z_out {z_out}, relu {relu}");
                    }
                }
            }
        }
    }

    /// Whole tiles, pooled tiles, odd tails, two-strip sparse blocks with a partial second strip and
    /// dense blocks, each with accumulators near the i32 limits, against the contract's formula.
    #[test]
    fn every_family_requantizes_whole_tiles_pools_and_partial_strips_exactly() {
        let k = 16;
        let mut rng = crate::rng::Rng::new(11);
        // Channels 0–31 use groups 0 and 2 (a shared pair), the rest group 1: sparse, paired.
        let sparse = |o: usize, kk: usize| matches!((o < 32, kk / 4), (true, 0 | 2) | (false, 1));
        for n in [24, 56, 64] {
            for dense in [false, true] {
                let w: Vec<i8> = (0..n * k)
                    .map(|i| if dense || sparse(i / k, i % k) { (rng.below(255) as i32 - 127) as i8 } else { 0 })
                    .collect();
                // Biases near ±2^30, so the accumulators reach far; shifts from 33 (high word) and mixed.
                let bias: Vec<i32> = (0..n).map(|o| if o % 2 == 0 { 1 << 30 } else { -(1 << 30) } + o as i32).collect();
                for shifts in [[33u8, 40, 62], [31, 32, 45]] {
                    let requant: Vec<Requant> = (0..n)
                        .map(|o| Requant { multiplier: [i32::MAX, 1 << 30, 1_234_567][o % 3], shift: shifts[o % 3] })
                        .collect();
                    for rows in [19, 24] {
                        let a: Vec<u8> = (0..(rows + SLACK_ROWS) * k).map(|_| rng.below(256) as u8).collect();
                        let acc = |r: usize, o: usize| {
                            let dot: i32 = (0..k).map(|kk| w[o * k + kk] as i32 * a[r * k + kk] as i32).sum();
                            bias[o].wrapping_add(dot)
                        };
                        for pool in [false, true] {
                            let out_rows = if pool { rows / 2 } else { rows };
                            let want: Vec<u8> = (0..out_rows * n)
                                .map(|i| {
                                    let (r, o) = (i / n, i % n);
                                    let x = if pool { acc(2 * r, o).max(acc(2 * r + 1, o)) } else { acc(r, o) };
                                    requant[o].apply(x, 3, true)
                                })
                                .collect();
                            let rows_run = if pool { rows / 2 * 2 } else { rows };
                            for isa in Isa::available_all() {
                                let layer = Layer::pack(isa, &w, &bias, &vec![0; k], &requant);
                                let mut dst = vec![0u8; out_rows * n];
                                let mut out = Out::Requant { dst: &mut dst, ldd: n, z_out: 3, relu: true, pool };
                                layer.run(isa, &a, k, rows_run, &mut Vec::new(), &mut out);
                                let what =
                                    format!("{isa}, n {n}, dense {dense}, shifts {shifts:?}, rows {rows}, pool {pool}");
                                assert_eq!(dst, want, "{what}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn four_channel_transpose_matches_the_general_one() {
        for steps in [1, 15, 16, 17, 52, 64, 70] {
            let src: Vec<u8> = (0..4 * steps).map(|i| (i * 7 % 251) as u8).collect();
            let (mut fast, mut plain) = (vec![0; 4 * steps], vec![0; 4 * steps]);
            transpose_4_channels(&src, &mut fast);
            transpose(&src, 4, &mut plain);
            assert_eq!(fast, plain, "{steps} steps");
        }
    }

    #[test]
    fn column_sums_cover_partial_chunks() {
        let (steps, channels) = (3, 70);
        let src: Vec<u8> = (0..steps * channels).map(|i| (i % 251) as u8).collect();
        let mut sums = vec![0; channels];
        column_sums(&src, channels, -5, &mut sums);
        for c in 0..channels {
            assert_eq!(sums[c], -5 + (0..steps).map(|t| src[t * channels + c] as i32).sum::<i32>());
        }
    }
}
