//! The per-customer flow shared by every precision: each customer's sequence goes through the
//! convolutions time-major (`[T, C]`, so a window is one contiguous slice and padding rows are whole
//! rows), its pooled features and static features land in one row of a tile of customers, and the
//! dense layers and heads then run on the whole tile as GEMMs (rows = customers). Buffers are sized once
//! per call; nothing allocates per customer.

use std::collections::BTreeMap;
use std::ops::Range;

use super::int8::{K_GROUP, SLACK_ROWS};
use super::program::Program;
use crate::engine::Batch;

/// Customers whose dense layers run as one GEMM (a multiple of every register tile height).
pub const TILE: usize = 48;

/// Scratch the kernels of one thread share.
#[derive(Default)]
pub struct KernelScratch {
    /// AVX2: activations widened to i16.
    pub wide: Vec<i16>,
    /// One customer's quantized sequence, channel-major, before it is transposed.
    pub staging: Vec<u8>,
    /// Per-channel sums of the global average pool.
    pub sums: Vec<i32>,
    /// A dequantized row for a float head of an int8 model.
    pub real: Vec<f32>,
    /// The fused heads' outputs `[rows, ltv + churn + segment]` before they are split per head.
    pub acc: Vec<i32>,
    pub logits: Vec<f32>,
}

/// One head's outputs for a range of rows.
pub enum HeadSlice<'a> {
    Acc(&'a mut [i32]),
    Logits(&'a mut [f32]),
}

impl HeadSlice<'_> {
    /// Splits off the first `rows` rows of `width` values.
    pub fn split(self, rows: usize, width: usize) -> (Self, Self) {
        match self {
            HeadSlice::Acc(v) => {
                let (a, b) = v.split_at_mut(rows * width);
                (HeadSlice::Acc(a), HeadSlice::Acc(b))
            }
            HeadSlice::Logits(v) => {
                let (a, b) = v.split_at_mut(rows * width);
                (HeadSlice::Logits(a), HeadSlice::Logits(b))
            }
        }
    }
}

/// What a precision supplies to the shared flow.
pub trait Stages: Sync {
    type Act: Copy + Default + Send + Sync;
    /// The value padding rows of convolution `i`'s input hold (its z_in, or 0.0).
    fn pad(&self, conv: usize) -> Self::Act;
    /// One customer's `[C, T]` sequence, written time-major (`dst[t·C + c]`).
    fn load_seq(&self, seq: &[f32], channels: usize, dst: &mut [Self::Act], scratch: &mut KernelScratch);
    fn load_static(&self, stat: &[f32], dst: &mut [Self::Act]);
    /// Convolution `i` (+ fused ReLU / pool) on a padded time-major input into `dst` (`[t_out, out_c]`).
    fn conv(&self, i: usize, src: &[Self::Act], dst: &mut [Self::Act], scratch: &mut KernelScratch);
    /// The global average pool of `[steps, channels]` into `channels` values.
    fn gap(&self, src: &[Self::Act], steps: usize, dst: &mut [Self::Act], scratch: &mut KernelScratch);
    /// Dense layer `j` (+ ReLU) on `rows` rows.
    #[allow(clippy::too_many_arguments)]
    fn dense(
        &self,
        j: usize,
        src: &[Self::Act],
        lda: usize,
        rows: usize,
        dst: &mut [Self::Act],
        ldd: usize,
        scratch: &mut KernelScratch,
    );
    /// The three heads on `rows` rows in one pass over the trunk, into exactly those rows of `out`.
    fn heads(&self, src: &[Self::Act], lda: usize, rows: usize, out: &mut [HeadSlice; 3], scratch: &mut KernelScratch);
    /// Share of layer multiply-adds executed: convolutions, dense layers, heads in program order.
    fn densities(&self) -> Vec<f64>;
    /// Whether head `h` gives i32 accumulators (int8) rather than float logits.
    fn head_is_acc(&self, h: usize) -> bool;
    /// The u8 value of an activation, for the debug trace (`None` for float plans).
    fn to_u8(a: Self::Act) -> Option<u8>;
}

/// A row stride that keeps grouped reduction reads aligned to whole groups.
fn stride(width: usize) -> usize {
    width.div_ceil(K_GROUP) * K_GROUP
}

struct Buffers<A> {
    /// Padded time-major input of each convolution.
    conv_in: Vec<Vec<A>>,
    /// The global average pool's input `[steps, channels]`.
    gap_in: Vec<A>,
    /// `tiles[0]` is the concatenated features, `tiles[j + 1]` dense layer j's output.
    tiles: Vec<Vec<A>>,
    scratch: KernelScratch,
}

impl<A: Copy + Default> Buffers<A> {
    fn new<S: Stages<Act = A>>(s: &S, p: &Program) -> Self {
        let conv_in = p
            .convs
            .iter()
            .enumerate()
            .map(|(i, c)| vec![s.pad(i); (c.left + c.t_in + c.right() + SLACK_ROWS) * c.in_c + K_GROUP])
            .collect();
        let widths = std::iter::once(p.concat_width()).chain(p.denses.iter().map(|d| d.n_out));
        Buffers {
            conv_in,
            gap_in: vec![A::default(); (p.gap_steps + SLACK_ROWS) * p.gap_channels],
            tiles: widths.map(|w| vec![A::default(); (TILE + SLACK_ROWS) * stride(w) + K_GROUP]).collect(),
            scratch: KernelScratch::default(),
        }
    }
}

/// Scores `rows` of the batch into `heads` (exactly those rows); `trace` collects the u8 tensors at
/// every fusion boundary, customer by customer.
pub fn run_rows<S: Stages>(
    s: &S,
    p: &Program,
    batch: &Batch,
    rows: Range<usize>,
    heads: [HeadSlice; 3],
    mut trace: Option<&mut BTreeMap<String, Vec<u8>>>,
) {
    let mut buf = Buffers::new(s, p);
    let mut heads = heads.map(Some);
    let widths = p.heads.clone().map(|h| h.1);
    let concat_ld = stride(p.concat_width());
    let (gap_off, stat_off) = p.concat_offsets();
    let mut start = rows.start;
    while start < rows.end {
        let n = TILE.min(rows.end - start);
        for r in 0..n {
            let row = &mut buf.tiles[0][r * concat_ld..(r + 1) * concat_ld];
            sequence_path(
                s,
                p,
                batch.seq_row(start + r),
                &mut buf.conv_in,
                &mut buf.gap_in,
                &mut buf.scratch,
                trace.as_deref_mut(),
            );
            s.gap(&buf.gap_in, p.gap_steps, &mut row[gap_off..gap_off + p.gap_channels], &mut buf.scratch);
            s.load_static(batch.stat_row(start + r), &mut row[stat_off..stat_off + p.static_features]);
            if let Some(t) = trace.as_deref_mut() {
                record(t, &p.gap_output, &row[gap_off..gap_off + p.gap_channels], S::to_u8);
                if let Some(concat) = &p.concat_output {
                    record(t, concat, &row[..p.concat_width()], S::to_u8);
                }
            }
        }
        for (j, d) in p.denses.iter().enumerate() {
            let (ins, outs) = buf.tiles.split_at_mut(j + 1);
            let (lda, ldd) = (stride(d.n_in), stride(d.n_out));
            s.dense(j, &ins[j], lda, n, &mut outs[0], ldd, &mut buf.scratch);
            if let Some(t) = trace.as_deref_mut() {
                for r in 0..n {
                    record(t, &d.output, &outs[0][r * ldd..r * ldd + d.n_out], S::to_u8);
                }
            }
        }
        let trunk = buf.tiles.last().expect("the concat tile at least");
        let mut mine = std::array::from_fn(|h| {
            let (tile, rest) = heads[h].take().expect("head rows").split(n, widths[h]);
            heads[h] = Some(rest);
            tile
        });
        s.heads(trunk, stride(p.trunk_width), n, &mut mine, &mut buf.scratch);
        start += n;
    }
}

/// One customer through the convolutions, ending in the pool's input.
fn sequence_path<S: Stages>(
    s: &S,
    p: &Program,
    seq: &[f32],
    conv_in: &mut [Vec<S::Act>],
    gap_in: &mut [S::Act],
    scratch: &mut KernelScratch,
    mut trace: Option<&mut BTreeMap<String, Vec<u8>>>,
) {
    match p.convs.first() {
        Some(c) => s.load_seq(seq, c.in_c, &mut conv_in[0][c.left * c.in_c..(c.left + c.t_in) * c.in_c], scratch),
        None => s.load_seq(seq, p.seq_channels, &mut gap_in[..p.seq_len * p.seq_channels], scratch),
    }
    for (i, c) in p.convs.iter().enumerate() {
        let (src, rest) = conv_in.split_at_mut(i + 1);
        let len = c.t_out() * c.out_c;
        let dst = match (rest.first_mut(), p.convs.get(i + 1)) {
            (Some(next), Some(nc)) => &mut next[nc.left * nc.in_c..nc.left * nc.in_c + len],
            _ => &mut gap_in[..len],
        };
        s.conv(i, &src[i], dst, scratch);
        if let Some(t) = trace.as_deref_mut() {
            let channel_major: Vec<S::Act> = (0..c.out_c)
                .flat_map(|ch| (0..c.t_out()).map(move |step| (step, ch)))
                .map(|(step, ch)| dst[step * c.out_c + ch])
                .collect();
            record(t, &c.output, &channel_major, S::to_u8);
        }
    }
}

/// Appends a boundary tensor's values (u8 plans only; float plans have no boundaries).
fn record<A: Copy>(trace: &mut BTreeMap<String, Vec<u8>>, tensor: &str, values: &[A], to_u8: fn(A) -> Option<u8>) {
    let bytes: Option<Vec<u8>> = values.iter().map(|&v| to_u8(v)).collect();
    if let Some(bytes) = bytes {
        trace.entry(tensor.to_string()).or_default().extend(bytes);
    }
}

/// One fused kernel of a plan with its own buffers, for micro-benchmarks: `(layer, multiply-adds
/// per call, a call)`. Convolutions run one customer; dense layers and heads a tile of `TILE`.
pub type KernelCall = (String, u64, Box<dyn FnMut()>);

pub fn kernel_calls<S: Stages + Send + 'static>(s: std::sync::Arc<S>, p: std::sync::Arc<Program>) -> Vec<KernelCall> {
    let macs = p.layer_macs();
    let mut calls: Vec<KernelCall> = Vec::new();
    for (i, c) in p.convs.iter().enumerate() {
        let (s, src) = (s.clone(), vec![s.pad(i); (c.left + c.t_in + c.right() + SLACK_ROWS) * c.in_c + K_GROUP]);
        let mut dst = vec![S::Act::default(); c.t_out() * c.out_c];
        let mut scratch = KernelScratch::default();
        calls.push((c.layer.clone(), macs[i], Box::new(move || s.conv(i, &src, &mut dst, &mut scratch))));
    }
    let widths: Vec<usize> = std::iter::once(p.concat_width()).chain(p.denses.iter().map(|d| d.n_out)).collect();
    for (j, d) in p.denses.iter().enumerate() {
        let s = s.clone();
        let (lda, ldd) = (stride(widths[j]), stride(d.n_out));
        let src = vec![S::Act::default(); (TILE + SLACK_ROWS) * lda + K_GROUP];
        let mut dst = vec![S::Act::default(); (TILE + SLACK_ROWS) * ldd + K_GROUP];
        let mut scratch = KernelScratch::default();
        let per_call = macs[p.convs.len() + j] * TILE as u64;
        calls.push((
            d.layer.clone(),
            per_call,
            Box::new(move || s.dense(j, &src, lda, TILE, &mut dst, ldd, &mut scratch)),
        ));
    }
    let (lda, widths) = (stride(p.trunk_width), p.heads.clone().map(|h| h.1));
    let src = vec![S::Act::default(); (TILE + SLACK_ROWS) * lda + K_GROUP];
    let mut outs: Vec<(Vec<i32>, Vec<f32>)> = widths.iter().map(|w| (vec![0; TILE * w], vec![0.0; TILE * w])).collect();
    let mut scratch = KernelScratch::default();
    let per_call = macs[p.convs.len() + p.denses.len()..].iter().sum::<u64>() * TILE as u64;
    calls.push((
        "heads".into(),
        per_call,
        Box::new(move || {
            let mut it = outs.iter_mut().enumerate();
            let mut next = || {
                let (h, (acc, logits)) = it.next().expect("three heads");
                if s.head_is_acc(h) { HeadSlice::Acc(acc) } else { HeadSlice::Logits(logits) }
            };
            let mut out = [next(), next(), next()];
            s.heads(&src, lda, TILE, &mut out, &mut scratch)
        }),
    ));
    calls
}
