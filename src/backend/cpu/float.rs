//! fp32 and fp16 on the CPU: register-tiled kernels (MR rows × NV vectors of 16 output channels, one
//! broadcast activation × one weight vector per FMA) in AVX-512 and AVX2 + FMA intrinsics, and plain
//! lane loops for the portable family.
//! fp16 weights stay f16 in the packed layout and are widened to f32 in the register that multiplies
//! them (`vcvtph2ps`, AVX-512F / F16C): f16 semantics, half the weight bytes; the arithmetic is f32.
//! The portable family, without F16C, packs them widened (exactly) instead.

use super::isa::Isa;

const LANES: usize = 16;

/// Output channels `col0 .. col0 + width`, weights `[k][nv·16]` (zero in padding lanes): `w` for
/// fp32 layers, `w16` (IEEE binary16 bits) for fp16 ones; the other is empty.
pub struct Block {
    col0: usize,
    width: usize,
    nv: usize,
    w: Vec<f32>,
    w16: Vec<u16>,
    bias: Vec<f32>,
}

impl Block {
    fn half(&self) -> bool {
        !self.w16.is_empty()
    }
}

pub struct Layer {
    pub n: usize,
    pub k: usize,
    blocks: Vec<Block>,
}

/// Where a float GEMM's outputs go: `dst[row · ldd + col]`, ReLU and the max-pool fused.
pub struct Out<'a> {
    pub dst: &'a mut [f32],
    pub ldd: usize,
    pub relu: bool,
    pub pool: bool,
}

impl Layer {
    /// `w` is `[n][k]` in the kernel's reduction order; with `half` every weight is an f16 value
    /// (an fp16 layer's weights, widened), stored back as f16 bits exactly.
    pub fn pack(isa: Isa, w: &[f32], bias: &[f32], half: bool) -> Layer {
        let n = bias.len();
        let k = w.len() / n.max(1);
        let max_nv = match isa {
            Isa::Avx512Vnni => 4,
            Isa::Avx2 => 2,
            Isa::Portable => 1,
        };
        let mut blocks = Vec::new();
        let mut col0 = 0;
        while col0 < n {
            let nv = (n - col0).div_ceil(LANES).min(max_nv);
            let width = (nv * LANES).min(n - col0);
            let lane = |l: usize| (l < width).then_some(col0 + l);
            let values = (0..k).flat_map(|kk| (0..nv * LANES).map(move |l| lane(l).map_or(0.0, |o| w[o * k + kk])));
            // The portable family has no F16C: it gets the (exactly) widened weights.
            let (w, w16) = if half && isa != Isa::Portable {
                (Vec::new(), values.map(|x| half::f16::from_f32(x).to_bits()).collect())
            } else {
                (values.collect(), Vec::new())
            };
            let bias = (0..nv * LANES).map(|l| lane(l).map_or(0.0, |o| bias[o])).collect();
            blocks.push(Block { col0, width, nv, w, w16, bias });
            col0 += width;
        }
        Layer { n, k, blocks }
    }

    /// Runs the layer on `rows` rows of `a` (row r at `a[r·lda ..][.. k]`), readable for
    /// `SLACK_ROWS` rows past the last.
    pub fn run(&self, isa: Isa, a: &[f32], lda: usize, rows: usize, out: &mut Out) {
        let needed = (rows + super::int8::SLACK_ROWS - 1) * lda + self.k;
        assert!(a.len() >= needed, "activation buffer of {} values, kernel reads {needed}", a.len());
        for b in &self.blocks {
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the plan only picks a family the CPU has; the assert bounds every read.
                Isa::Avx512Vnni => unsafe { avx512(a, lda, rows, self.k, b, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Isa::Avx2 => unsafe { avx2(a, lda, rows, self.k, b, out) },
                _ => tiles_portable(a, lda, rows, self.k, b, out),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512(a: &[f32], lda: usize, rows: usize, k: usize, b: &Block, out: &mut Out) {
    // SAFETY: the caller checked the reads; the CPU has AVX-512F.
    unsafe {
        match b.nv {
            1 => x86::tiles512::<1, 12>(a, lda, rows, k, b, out),
            2 => x86::tiles512::<2, 12>(a, lda, rows, k, b, out),
            3 => x86::tiles512::<3, 8>(a, lda, rows, k, b, out),
            _ => x86::tiles512::<4, 6>(a, lda, rows, k, b, out),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2(a: &[f32], lda: usize, rows: usize, k: usize, b: &Block, out: &mut Out) {
    // SAFETY: the caller checked the reads; the CPU has AVX2 and FMA.
    unsafe {
        match b.nv {
            1 => x86::tiles256::<2, 6>(a, lda, rows, k, b, out),
            _ => x86::tiles256::<4, 2>(a, lda, rows, k, b, out),
        }
    }
}

/// Plain loops over two rows and 16 outputs, lane-wise so that LLVM can vectorize them with
/// whatever the baseline target has.
fn tiles_portable(a: &[f32], lda: usize, rows: usize, k: usize, b: &Block, out: &mut Out) {
    let mut r0 = 0;
    while r0 < rows {
        let mut acc = [[[0f32; LANES]; 1]; 2];
        for (r, row) in acc.iter_mut().enumerate() {
            let lanes = &mut row[0];
            lanes.copy_from_slice(&b.bias[..LANES]);
            let x = &a[(r0 + r) * lda..(r0 + r) * lda + k];
            for (&x, w) in x.iter().zip(b.w.chunks_exact(LANES)) {
                for (acc, &w) in lanes.iter_mut().zip(w) {
                    *acc += x * w;
                }
            }
        }
        store(&acc, r0, rows, b, out);
        r0 += 2;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Block, LANES, Out, store};

    /// MR rows × NV vectors of 16 outputs in zmm registers; accumulators returned by value so they
    /// stay in registers.
    #[inline(always)]
    pub unsafe fn tiles512<const NV: usize, const MR: usize>(
        a: &[f32],
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
        // SAFETY: `Layer::run` checked that whole tiles of `a` are readable; `w` holds k × NV·16.
        unsafe {
            let bias: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(b.bias.as_ptr().add(v * LANES)));
            let mut r0 = 0;
            while r0 < rows {
                let (ap, wf, wh) = (a.as_ptr().add(r0 * lda), b.w.as_ptr(), b.w16.as_ptr());
                let acc = if b.half() {
                    acc512::<NV, MR, true>(bias, ap, lda, k, wf, wh)
                } else {
                    acc512::<NV, MR, false>(bias, ap, lda, k, wf, wh)
                };
                store512(acc, r0, rows, b, out);
                r0 += MR;
            }
        }
    }

    /// ReLU and the pool's max in registers, then masked stores of the real channels and rows.
    #[inline(always)]
    unsafe fn store512<const NV: usize, const MR: usize>(
        acc: [[__m512; NV]; MR],
        r0: usize,
        rows: usize,
        b: &Block,
        out: &mut Out,
    ) {
        let (step, out_rows, out0) = if out.pool { (2, rows / 2, r0 / 2) } else { (1, rows, r0) };
        // SAFETY: register operations, and stores masked to `valid` lanes inside `dst` (asserted).
        unsafe {
            for i in 0..(MR / step).min(out_rows.saturating_sub(out0)) {
                #[allow(clippy::needless_range_loop)] // `v` indexes the accumulators, the block and the output alike
                for v in 0..NV {
                    let valid = b.width.saturating_sub(v * LANES).min(LANES);
                    let mut x = if out.pool { _mm512_max_ps(acc[2 * i][v], acc[2 * i + 1][v]) } else { acc[i][v] };
                    if out.relu {
                        x = _mm512_max_ps(x, _mm512_setzero_ps());
                    }
                    let at = (out0 + i) * out.ldd + b.col0 + v * LANES;
                    assert!(at + valid <= out.dst.len(), "output row inside the destination");
                    _mm512_mask_storeu_ps(out.dst.as_mut_ptr().add(at), ((1u32 << valid) - 1) as u16, x);
                }
            }
        }
    }

    /// With `HALF` the weights are f16 bits at `wh`, widened in the register; else f32 at `wf`.
    #[inline(always)]
    unsafe fn acc512<const NV: usize, const MR: usize, const HALF: bool>(
        bias: [__m512; NV],
        a: *const f32,
        lda: usize,
        k: usize,
        wf: *const f32,
        wh: *const u16,
    ) -> [[__m512; NV]; MR] {
        // SAFETY: the caller's bounds; only the pointer `HALF` selects is read.
        unsafe {
            let mut acc = [bias; MR];
            for kk in 0..k {
                let wv: [__m512; NV] = std::array::from_fn(|v| {
                    let at = (kk * NV + v) * LANES;
                    if HALF {
                        _mm512_cvtph_ps(_mm256_loadu_si256(wh.add(at).cast()))
                    } else {
                        _mm512_loadu_ps(wf.add(at))
                    }
                });
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(r * lda + kk));
                    for v in 0..NV {
                        acc_r[v] = _mm512_fmadd_ps(x, wv[v], acc_r[v]);
                    }
                }
            }
            acc
        }
    }

    /// As `tiles512` with 8-lane ymm registers: H halves of 8 per block (H = 2·NV).
    #[inline(always)]
    pub unsafe fn tiles256<const H: usize, const MR: usize>(
        a: &[f32],
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
        // SAFETY: as in `tiles512`; a block of NV vectors holds 2·NV halves.
        unsafe {
            let bias: [__m256; H] = std::array::from_fn(|h| _mm256_loadu_ps(b.bias.as_ptr().add(h * 8)));
            let mut r0 = 0;
            while r0 < rows {
                let (ap, wf, wh) = (a.as_ptr().add(r0 * lda), b.w.as_ptr(), b.w16.as_ptr());
                let acc = if b.half() {
                    acc256::<H, MR, true>(bias, ap, lda, k, wf, wh)
                } else {
                    acc256::<H, MR, false>(bias, ap, lda, k, wf, wh)
                };
                let mut lanes = [[[0f32; LANES]; 2]; MR];
                for (r, row) in acc.iter().enumerate() {
                    for (h, &x) in row.iter().enumerate() {
                        _mm256_storeu_ps(lanes[r][h / 2].as_mut_ptr().add(h % 2 * 8), x);
                    }
                }
                store(&lanes, r0, rows, b, out);
                r0 += MR;
            }
        }
    }

    #[inline(always)]
    unsafe fn acc256<const H: usize, const MR: usize, const HALF: bool>(
        bias: [__m256; H],
        a: *const f32,
        lda: usize,
        k: usize,
        wf: *const f32,
        wh: *const u16,
    ) -> [[__m256; H]; MR] {
        // SAFETY: the caller's bounds; only the pointer `HALF` selects is read.
        unsafe {
            let mut acc = [bias; MR];
            for kk in 0..k {
                let wv: [__m256; H] = std::array::from_fn(|h| {
                    let at = kk * H * 8 + h * 8;
                    if HALF { _mm256_cvtph_ps(_mm_loadu_si128(wh.add(at).cast())) } else { _mm256_loadu_ps(wf.add(at)) }
                });
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*a.add(r * lda + kk));
                    for h in 0..H {
                        acc_r[h] = _mm256_fmadd_ps(x, wv[h], acc_r[h]);
                    }
                }
            }
            acc
        }
    }
}

#[inline(always)]
fn store<const NV: usize, const MR: usize>(
    acc: &[[[f32; LANES]; NV]; MR],
    r0: usize,
    rows: usize,
    b: &Block,
    out: &mut Out,
) {
    let (step, out_rows, out0) = if out.pool { (2, rows / 2, r0 / 2) } else { (1, rows, r0) };
    for i in 0..(MR / step).min(out_rows.saturating_sub(out0)) {
        let at = (out0 + i) * out.ldd + b.col0;
        for (c, d) in out.dst[at..at + b.width].iter_mut().enumerate() {
            let (v, l) = (c / LANES, c % LANES);
            let mut x = if out.pool { acc[2 * i][v][l].max(acc[2 * i + 1][v][l]) } else { acc[i][v][l] };
            if out.relu {
                x = x.max(0.0);
            }
            *d = x;
        }
    }
}

use super::int8::{conv_weights_kc, split_columns, transpose};
use super::pipeline::{HeadSlice, KernelScratch, Stages};
use super::program::Program;
use crate::model::Model;

struct Conv {
    layer: Layer,
    in_c: usize,
    rows: usize,
    relu: bool,
    pool: bool,
}

/// An fp32 or fp16 model, packed for one instruction-set family.
pub struct FloatStages {
    isa: Isa,
    convs: Vec<Conv>,
    denses: Vec<(Layer, bool)>,
    /// The three heads stacked (ltv, churn, segment): one GEMM over the trunk.
    heads: Layer,
    head_widths: [usize; 3],
}

impl FloatStages {
    pub fn new(isa: Isa, model: &Model, p: &Program) -> FloatStages {
        let bias = |layer: &str| -> Vec<f32> { model.f32s(&format!("{layer}.bias")).into_owned() };
        let half = |layer: &str| model.layer_precision(layer) == crate::model::Precision::Fp16;
        let convs = p
            .convs
            .iter()
            .map(|c| {
                let w = conv_weights_kc(&model.weights_f32(&c.layer), c.in_c, c.kernel);
                let rows = if c.pool { c.t_conv / 2 * 2 } else { c.t_conv };
                let layer = Layer::pack(isa, &w, &bias(&c.layer), half(&c.layer));
                Conv { layer, in_c: c.in_c, rows, relu: c.relu, pool: c.pool }
            })
            .collect();
        let dense = |layer: &str| Layer::pack(isa, &model.weights_f32(layer), &bias(layer), half(layer));
        FloatStages {
            isa,
            convs,
            denses: p.denses.iter().map(|d| (dense(&d.layer), d.relu)).collect(),
            heads: {
                let (mut w, mut b) = (Vec::new(), Vec::new());
                for (name, _) in &p.heads {
                    w.extend(model.weights_f32(name));
                    b.extend(bias(name));
                }
                Layer::pack(isa, &w, &b, p.heads.iter().all(|(name, _)| half(name)))
            },
            head_widths: p.heads.clone().map(|h| h.1),
        }
    }
}

impl Stages for FloatStages {
    type Act = f32;

    fn pad(&self, _conv: usize) -> f32 {
        0.0
    }

    fn load_seq(&self, seq: &[f32], channels: usize, dst: &mut [f32], _scratch: &mut KernelScratch) {
        transpose(seq, channels, dst);
    }

    fn load_static(&self, stat: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(stat);
    }

    fn conv(&self, i: usize, src: &[f32], dst: &mut [f32], _scratch: &mut KernelScratch) {
        let c = &self.convs[i];
        let ldd = c.layer.n;
        c.layer.run(self.isa, src, c.in_c, c.rows, &mut Out { dst, ldd, relu: c.relu, pool: c.pool });
    }

    fn gap(&self, src: &[f32], steps: usize, dst: &mut [f32], _scratch: &mut KernelScratch) {
        let channels = dst.len();
        for (c, d) in dst.iter_mut().enumerate() {
            *d = (0..steps).map(|t| src[t * channels + c]).sum::<f32>() / steps as f32;
        }
    }

    fn dense(
        &self,
        j: usize,
        src: &[f32],
        lda: usize,
        rows: usize,
        dst: &mut [f32],
        ldd: usize,
        _scratch: &mut KernelScratch,
    ) {
        let (layer, relu) = &self.denses[j];
        layer.run(self.isa, src, lda, rows, &mut Out { dst, ldd, relu: *relu, pool: false });
    }

    fn heads(&self, src: &[f32], lda: usize, rows: usize, out: &mut [HeadSlice; 3], scratch: &mut KernelScratch) {
        let n = self.heads.n;
        scratch.logits.resize(rows * n, 0.0);
        self.heads.run(
            self.isa,
            src,
            lda,
            rows,
            &mut Out { dst: &mut scratch.logits, ldd: n, relu: false, pool: false },
        );
        for (h, slot) in out.iter_mut().enumerate() {
            let HeadSlice::Logits(dst) = slot else { unreachable!("float heads give logits") };
            split_columns(&scratch.logits, n, &self.head_widths, h, dst);
        }
    }

    fn head_is_acc(&self, _h: usize) -> bool {
        false
    }

    fn densities(&self) -> Vec<f64> {
        vec![1.0; self.convs.len() + self.denses.len() + 3]
    }

    fn to_u8(_a: f32) -> Option<u8> {
        None
    }
}
