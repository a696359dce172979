//! A model compiled into launches of the kernels in kernels/cuda: the same slots, boundaries and
//! heads as the OpenCL backend (crate::backend::launch), with the weights in the form the CUDA
//! kernels read. For dp4a, int8 weights are packed `[output][reduction padded to a multiple of 4]`
//! with zero weights in the padding, so four of them are one word; for the tensor cores tap-major,
//! rows padded to 32 bytes and to 32 rows, with a live mask of the nonzero 32x32 blocks. Biases have
//! the zero-point terms folded in. Every CUDA kernel takes a count first (output values, or
//! customers for the tiled kernels); the plan passes it, so the steps hold only the arguments after
//! it. Weights stay on the host here: the plan uploads them.

use crate::backend::cpu::program::Program;
use crate::backend::launch::{
    Boundary, Encoding, Head, Int8Params, SEQ_SLOT, Step, StepArg, Tile, flag, float_weights, int,
};
use crate::error::Result;
use crate::model::graph::{SEQ, STATIC};
use crate::model::{Model, Precision};

use super::backend_err;

/// What a model compiles into, before anything is on the device.
pub(super) struct Compiled {
    /// Kernel names, indexed by `Step::kernel`.
    pub(super) kernels: Vec<&'static str>,
    /// Constant buffers (weights, biases, requantization parameters), indexed by `StepArg::Const`.
    pub(super) consts: Vec<Vec<u8>>,
    /// Bytes per customer of each slot.
    pub(super) slots: Vec<usize>,
    pub(super) steps: Vec<Step>,
    pub(super) boundaries: Vec<Boundary>,
    pub(super) heads: [Head; 3],
    /// The concatenated-features slot.
    pub(super) concat: usize,
    pub(super) encoding: Encoding,
    /// Per weighted layer (convolutions, dense layers, heads; `Program::layer_macs`'s order), the
    /// share of its weight blocks the kernels run: below 1 where zero blocks are skipped.
    pub(super) densities: Vec<f64>,
    /// A slot only traced runs write (boundaries a fused kernel otherwise keeps on chip).
    pub(super) trace_only: Option<usize>,
}

/// Compiles `p` (of `model`) into launches; `tensor_cores` (sm_80+) puts the int8 layers on the
/// tiled kernels where their inputs fit in `shared` bytes of shared memory per block.
pub(super) fn compile(model: &Model, p: &Program, tensor_cores: bool, shared: usize) -> Result<Compiled> {
    let mut b = Builder::default();
    let (encoding, (heads, concat)) = match model.precision() {
        Precision::Int8 => {
            let q = model
                .quantization()
                .ok_or_else(|| backend_err("an int8 model without quantization parameters".into()))?;
            let segments = q.segment_map(model.graph(), &model.shapes)?;
            let tiles = tensor_cores.then_some(shared);
            let heads = compile_int8(&mut b, &Int8Params { model, q, segments }, p, tiles);
            (Encoding::U8 { seq: q.activations[SEQ], stat: q.activations[STATIC] }, heads)
        }
        Precision::Fp32 | Precision::Fp16 => (Encoding::F32, compile_float(&mut b, model, p)),
    };
    let Builder { kernels, consts, slots, steps, boundaries, densities, trace_only } = b;
    let densities = if densities.is_empty() { vec![1.0; p.layer_macs().len()] } else { densities };
    Ok(Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding, densities, trace_only })
}

#[derive(Default)]
struct Builder {
    kernels: Vec<&'static str>,
    consts: Vec<Vec<u8>>,
    slots: Vec<usize>,
    steps: Vec<Step>,
    boundaries: Vec<Boundary>,
    /// Of each int8 convolution and dense layer so far (see `Compiled::densities`).
    densities: Vec<f64>,
    trace_only: Option<usize>,
}

impl Builder {
    fn constant(&mut self, bytes: Vec<u8>) -> StepArg {
        self.consts.push(bytes);
        StepArg::Const(self.consts.len() - 1)
    }

    fn ints(&mut self, v: impl IntoIterator<Item = i32>) -> StepArg {
        self.constant(bytemuck::cast_slice(&v.into_iter().collect::<Vec<i32>>()).to_vec())
    }

    fn floats(&mut self, v: &[f32]) -> StepArg {
        self.constant(bytemuck::cast_slice(v).to_vec())
    }

    fn slot(&mut self, row_bytes: usize) -> usize {
        self.slots.push(row_bytes);
        self.slots.len() - 1
    }

    fn step(&mut self, kernel: &'static str, args: Vec<StepArg>, per_row: Vec<usize>) {
        self.launch(kernel, args, per_row, None);
    }

    fn launch(&mut self, kernel: &'static str, args: Vec<StepArg>, per_row: Vec<usize>, tile: Option<Tile>) {
        let index = self.kernels.iter().position(|n| *n == kernel).unwrap_or_else(|| {
            self.kernels.push(kernel);
            self.kernels.len() - 1
        });
        self.steps.push(Step { kernel: index, args, per_row, tile });
    }

    fn boundary(&mut self, tensor: &str, slot: usize, range: std::ops::Range<usize>) {
        self.boundaries.push(Boundary { tensor: tensor.to_string(), slot, range, channels_last: None });
    }

    /// A boundary the device keeps channels-last (`steps` x `channels` per customer).
    fn boundary_channels_last(&mut self, tensor: &str, slot: usize, steps: usize, channels: usize) {
        let range = 0..steps * channels;
        let channels_last = Some((steps, channels));
        self.boundaries.push(Boundary { tensor: tensor.to_string(), slot, range, channels_last });
    }
}

/// `rows` rows of s8 weights, each padded with zeros to a whole number of 4-byte words; returns the
/// packed bytes and the words per row.
fn pack4(w: &[u8], rows: usize) -> (Vec<u8>, usize) {
    let len = w.len() / rows;
    let words = len.div_ceil(4);
    let mut packed = vec![0u8; rows * words * 4];
    for (dst, src) in packed.chunks_exact_mut(words * 4).zip(w.chunks_exact(len)) {
        dst[..len].copy_from_slice(src);
    }
    (packed, words)
}

/// An int8 convolution's (or dense layer's, as one step and one tap) sizes.
#[derive(Clone)]
struct LayerShape {
    cin: usize,
    t_in: usize,
    cout: usize,
    t_out: usize,
    k: usize,
    left: usize,
}

impl LayerShape {
    /// 32-bit words of a tensor-core weight row: the tap-major reduction padded to 32 bytes.
    fn mma_words(&self) -> usize {
        (self.cin * self.k).div_ceil(32) * 8
    }

    /// Bytes of this layer's staged input row: the padded input, and the last output step's whole
    /// padded reduction row.
    fn staged_bytes(&self) -> usize {
        ((self.t_in + self.k - 1) * self.cin).max((self.t_in - 1) * self.cin + 4 * self.mma_words())
    }
}

/// The share of a live mask's blocks that are live (the kernels run those).
fn density(live: &[i32]) -> f64 {
    live.iter().filter(|&&v| v != 0).count() as f64 / live.len().max(1) as f64
}

/// Output rows (customers × output steps) a tensor-core block aims for: enough to give each of its
/// warps (plan::TILE_THREADS / 32) several 16-row tiles.
const TILE_ROWS: usize = 256;

/// How conv_mma_u8 runs a layer: customers per block and the bytes of one staged row (a multiple of
/// 16, covering the padded input and the last output step's whole padded reduction row). `None`
/// when not even one customer fits in shared memory.
fn mma_tile(l: &LayerShape, shared: usize) -> Option<(Tile, usize)> {
    let stride = l.staged_bytes().next_multiple_of(16);
    let customers = TILE_ROWS.div_ceil(l.t_out).min(shared / stride);
    (customers > 0).then_some((Tile { customers, shared_bytes: customers * stride }, stride))
}

/// Weights `[output][input channel][tap]` (s8) rearranged tap-major (`[output][tap][input
/// channel]`, the order of conv_mma_u8's staged rows), each row padded with zeros to a multiple of
/// 32 bytes and the rows to a multiple of 32; returns the bytes and the 32-bit words per row.
fn pack_tap_major(w: &[u8], l: &LayerShape) -> (Vec<u8>, usize) {
    let reduction = l.cin * l.k;
    let words = l.mma_words();
    let mut packed = vec![0u8; l.cout.next_multiple_of(32) * words * 4];
    for (o, row) in w.chunks_exact(reduction).enumerate() {
        let dst = &mut packed[o * words * 4..];
        for c in 0..l.cin {
            for j in 0..l.k {
                dst[j * l.cin + c] = row[c * l.k + j];
            }
        }
    }
    (packed, words)
}

/// For tap-major packed weights of `words` per row: per 32-row tile and 32-byte reduction step,
/// 1 where any weight of that block is nonzero, 0 where the tensor-core kernel may skip it.
fn live_blocks(packed: &[u8], words: usize) -> Vec<i32> {
    let row = words * 4;
    let tiles = packed.len() / row / 32;
    let mut live = Vec::with_capacity(tiles * words / 8);
    for nt in 0..tiles {
        for ks in 0..words / 8 {
            let block = (0..32).flat_map(|r| &packed[(nt * 32 + r) * row + ks * 32..][..32]);
            live.push(block.into_iter().any(|&v| v != 0) as i32);
        }
    }
    live
}

/// `v` padded with zeros to a multiple of 32 entries (the tensor-core kernel's column tiles).
fn padded32(mut v: Vec<i32>) -> Vec<i32> {
    v.resize(v.len().next_multiple_of(32), 0);
    v
}

/// How an int8 layer runs: on conv_mma_u8 (its tile and staged row bytes) or dp4a, and whether
/// its input and output are channels-last (`[customer][step][channel]`; else channels-first).
struct LayerForm {
    tiled: Option<(Tile, usize)>,
    in_channels_last: bool,
    out_channels_last: bool,
}

/// The form of each convolution: tensor-core tiles where asked and the staged inputs fit; outputs
/// channels-last where the next reader takes them (the next convolution on tensor cores, or the
/// global average pool), which makes the tiled kernels' stores and staging copies contiguous. The
/// sequence arrives channels-first from the host.
fn conv_forms(shapes: &[LayerShape], tiles: Option<usize>) -> Vec<LayerForm> {
    let tiled: Vec<Option<(Tile, usize)>> =
        shapes.iter().map(|l| tiles.and_then(|shared| mma_tile(l, shared))).collect();
    let mut forms: Vec<LayerForm> = Vec::with_capacity(shapes.len());
    for (i, t) in tiled.iter().enumerate() {
        let in_channels_last = i > 0 && forms[i - 1].out_channels_last;
        let next_takes_it = tiled.get(i + 1).is_none_or(|next| next.is_some());
        forms.push(LayerForm { tiled: *t, in_channels_last, out_channels_last: t.is_some() && next_takes_it });
    }
    forms
}

/// One int8 convolution or dense layer from slot `io.0` to `io.1`, in `form`. `params`: the
/// folded weights and bias, multipliers and shifts; `z`: input and output zero points; `flags`:
/// ReLU, pool.
fn layer_int8(
    b: &mut Builder,
    form: &LayerForm,
    io: (usize, usize),
    l: &LayerShape,
    params: (Vec<u8>, Vec<i32>, Vec<i32>, Vec<i32>),
    z: (i32, i32),
    flags: (bool, bool),
) {
    let (x, y) = io;
    let (w, bias, mult, shift) = params;
    let dense = l.t_in == 1 && l.k == 1;
    if let Some((tile, stride)) = form.tiled {
        let (packed, words) = pack_tap_major(&w, l);
        let live = live_blocks(&packed, words);
        b.densities.push(density(&live));
        let args = vec![
            StepArg::Slot(x),
            b.constant(packed),
            b.ints(live),
            b.ints(padded32(bias)),
            b.ints(padded32(mult)),
            b.ints(padded32(shift)),
            StepArg::Slot(y),
            int(l.cin),
            int(l.t_in),
            int(l.cout),
            int(l.t_out),
            int(l.left),
            int(words),
            StepArg::Int(z.0),
            StepArg::Int(z.1),
            flag(flags.0),
            flag(flags.1),
            flag(form.in_channels_last),
            flag(form.out_channels_last),
            int(tile.customers),
            int(stride),
        ];
        b.launch("conv_mma_u8", args, Vec::new(), Some(tile));
        return;
    }
    debug_assert!(!form.in_channels_last && !form.out_channels_last, "the dp4a kernels are channels-first");
    b.densities.push(1.0);
    let (w4, words) = pack4(&w, l.cout);
    let mut args = vec![StepArg::Slot(x), b.constant(w4), b.ints(bias), b.ints(mult), b.ints(shift), StepArg::Slot(y)];
    if dense {
        args.extend([int(l.cin), int(words), int(l.cout), StepArg::Int(z.1), flag(flags.0)]);
        b.step("dense_u8", args, vec![l.cout]);
    } else {
        args.extend([int(l.cin), int(l.t_in), int(l.cout), int(l.t_out), int(l.k), int(l.left), int(words)]);
        args.extend([StepArg::Int(z.0), StepArg::Int(z.1), flag(flags.0), flag(flags.1)]);
        b.step("conv_u8", args, vec![l.cout, l.t_out]);
    }
}

/// Ints per layer of convs_mma_u8's table (kernels/cuda/int8.cu, `LAYER_FIELDS`).
const LAYER_FIELDS: usize = 16;

/// How convs_mma_u8 runs the whole convolution chain: customers per block and the bytes of each of
/// its two shared-memory rows per customer (every layer's staged input, whole padded reduction rows
/// included, and the last layer's outputs). `None` when two rows of one customer exceed shared
/// memory.
fn chain_tile(shapes: &[LayerShape], shared: usize) -> Option<(Tile, usize)> {
    let first = shapes.first()?;
    let stride = shapes
        .iter()
        .map(LayerShape::staged_bytes)
        .chain(shapes.last().map(|l| l.t_out * l.cout))
        .max()?
        .next_multiple_of(16);
    let customers = TILE_ROWS.div_ceil(first.t_out).min(shared / (2 * stride));
    (customers > 0).then_some((Tile { customers, shared_bytes: 2 * customers * stride }, stride))
}

/// The convolution chain and the global average pool as one convs_mma_u8 launch, from the sequence
/// slot into the pooled part of `concat`; every convolution's output is a trace boundary in a slot
/// of its own that only traced runs write. `params[i]`: layer i's folded weights and bias,
/// multipliers and shifts; `z[i]`: its input and output zero points.
fn compile_chain(
    b: &mut Builder,
    m: &Int8Params,
    p: &Program,
    shapes: &[LayerShape],
    (tile, stride): (Tile, usize),
    concat: usize,
) {
    let mut table: Vec<i32> = Vec::new();
    let (mut weights, mut ints): (Vec<u8>, Vec<i32>) = (Vec::new(), Vec::new());
    let mut trace_row = 0;
    let mut traced = Vec::new();
    let mut previous_z: Option<i32> = None;
    for (c, l) in p.convs.iter().zip(shapes) {
        let z_in = m.input(&c.layer)[0].zero_point;
        // The kernel pads a layer's input with the previous layer's output zero point.
        debug_assert!(previous_z.is_none_or(|z| z == z_in as i32), "{}: input zero point", c.layer);
        previous_z = Some(m.output_z(&c.layer));
        let (w, bias) = m.folded(&c.layer, &[z_in]);
        let (mult, shift) = m.requant(&c.layer);
        let (packed, words) = pack_tap_major(&w, l);
        let live = live_blocks(&packed, words);
        b.densities.push(density(&live));
        let offset = |v: usize| i32::try_from(v).expect("weights far below 8 GiB");
        let at = |v: &[i32], ints: &mut Vec<i32>| {
            ints.extend_from_slice(v);
            offset(ints.len() - v.len())
        };
        let w_at = offset(weights.len() / 4);
        weights.extend_from_slice(&packed);
        let live_at = at(&live, &mut ints);
        let bias_at = at(&padded32(bias), &mut ints);
        let mult_at = at(&padded32(mult), &mut ints);
        let shift_at = at(&padded32(shift), &mut ints);
        let fields = [l.cin, l.t_in, l.cout, l.t_out, l.left, words]
            .map(|v| i32::try_from(v).expect("layer sizes are validated far below i32::MAX"));
        table.extend(fields);
        table.extend([z_in as i32, m.output_z(&c.layer), c.relu as i32, c.pool as i32]);
        table.extend([w_at, live_at, bias_at, mult_at, shift_at, offset(trace_row)]);
        traced.push((c.output.clone(), trace_row, l.t_out, l.cout));
        trace_row += l.t_out * l.cout;
    }
    debug_assert_eq!(table.len(), LAYER_FIELDS * shapes.len());
    let trace = b.slot(trace_row);
    b.trace_only = Some(trace);
    for (tensor, at, steps, channels) in traced {
        let range = at..at + steps * channels;
        b.boundaries.push(Boundary { tensor, slot: trace, range, channels_last: Some((steps, channels)) });
    }
    let gap = m.requant(&p.gap_layer);
    let args = vec![
        StepArg::Slot(SEQ_SLOT),
        b.ints(table),
        b.constant(weights),
        b.ints(ints),
        StepArg::Slot(concat),
        StepArg::Slot(trace),
        int(shapes.len()),
        int(tile.customers),
        int(stride),
        int(p.concat_width()),
        int(p.concat_offsets().0),
        StepArg::Int(gap.0[0]),
        StepArg::Int(gap.1[0]),
        StepArg::Int(m.input(&p.gap_layer)[0].zero_point as i32),
        StepArg::Int(m.z(&p.gap_output)),
        int(trace_row),
        StepArg::Tracing,
    ];
    b.launch("convs_mma_u8", args, Vec::new(), Some(tile));
}

/// The int8 launches; returns the heads and the concatenated-features slot.
/// `tiles`: the shared memory per block the tensor-core kernels may use (`None`: dp4a only).
fn compile_int8(b: &mut Builder, m: &Int8Params, p: &Program, tiles: Option<usize>) -> ([Head; 3], usize) {
    let shapes: Vec<LayerShape> = p
        .convs
        .iter()
        .map(|c| LayerShape { cin: c.in_c, t_in: c.t_in, cout: c.out_c, t_out: c.t_out(), k: c.kernel, left: c.left })
        .collect();
    let mut x = b.slot(p.seq_channels * p.seq_len);
    debug_assert_eq!(x, SEQ_SLOT);
    let chain = tiles.and_then(|shared| chain_tile(&shapes, shared));
    if let Some(chain) = chain {
        let concat = b.slot(p.concat_width());
        compile_chain(b, m, p, &shapes, chain, concat);
        let gap_off = p.concat_offsets().0;
        b.boundary(&p.gap_output, concat, gap_off..gap_off + p.gap_channels);
        return compile_trunk(b, m, p, tiles, concat);
    }
    let forms = conv_forms(&shapes, tiles);
    for ((c, shape), form) in p.convs.iter().zip(&shapes).zip(&forms) {
        let z_in = m.input(&c.layer)[0].zero_point;
        let (w, bias) = m.folded(&c.layer, &[z_in]);
        let (mult, shift) = m.requant(&c.layer);
        let y = b.slot(c.out_c * c.t_out());
        let z = (z_in as i32, m.output_z(&c.layer));
        layer_int8(b, form, (x, y), shape, (w, bias, mult, shift), z, (c.relu, c.pool));
        if form.out_channels_last {
            b.boundary_channels_last(&c.output, y, c.t_out(), c.out_c);
        } else {
            b.boundary(&c.output, y, 0..c.out_c * c.t_out());
        }
        x = y;
    }
    let gap_channels_last = forms.last().is_some_and(|f| f.out_channels_last);
    let concat = b.slot(p.concat_width());
    let gap_off = p.concat_offsets().0;
    let gap = m.requant(&p.gap_layer);
    let args = vec![
        StepArg::Slot(x),
        StepArg::Slot(concat),
        int(p.gap_channels),
        int(p.gap_steps),
        int(p.concat_width()),
        int(gap_off),
        StepArg::Int(gap.0[0]),
        StepArg::Int(gap.1[0]),
        StepArg::Int(m.input(&p.gap_layer)[0].zero_point as i32),
        StepArg::Int(m.z(&p.gap_output)),
        flag(gap_channels_last),
    ];
    b.step("gap_u8", args, vec![p.gap_channels]);
    b.boundary(&p.gap_output, concat, gap_off..gap_off + p.gap_channels);
    compile_trunk(b, m, p, tiles, concat)
}

/// The dense layers and heads after the concatenated features in `concat`; returns the heads and
/// `concat`.
fn compile_trunk(
    b: &mut Builder,
    m: &Int8Params,
    p: &Program,
    tiles: Option<usize>,
    concat: usize,
) -> ([Head; 3], usize) {
    if let Some(t) = &p.concat_output {
        b.boundary(t, concat, 0..p.concat_width());
    }
    let mut x = concat;
    for d in &p.denses {
        let zeros: Vec<u8> = m.input(&d.layer).iter().map(|a| a.zero_point).collect();
        let (w, bias) = m.folded(&d.layer, &zeros);
        let (mult, shift) = m.requant(&d.layer);
        let y = b.slot(d.n_out);
        // A dense layer is a one-step convolution with one tap over its inputs as channels; the
        // folded bias already carries each input's own zero point, so the padding value is unused.
        let shape = LayerShape { cin: d.n_in, t_in: 1, cout: d.n_out, t_out: 1, k: 1, left: 0 };
        // One step: channels-first and channels-last are the same bytes, and the tiled kernel copies
        // channels-last rows whole.
        let tiled = tiles.and_then(|shared| mma_tile(&shape, shared));
        let form = LayerForm { tiled, in_channels_last: tiled.is_some(), out_channels_last: false };
        let z = (0, m.output_z(&d.layer));
        layer_int8(b, &form, (x, y), &shape, (w, bias, mult, shift), z, (d.relu, false));
        b.boundary(&d.output, y, 0..d.n_out);
        x = y;
    }
    let mut heads = Vec::new();
    for (name, width) in &p.heads {
        b.densities.push(1.0);
        let input = m.input(name);
        let y = b.slot(width * 4);
        if m.model.layer_precision(name) == Precision::Int8 {
            let zeros: Vec<u8> = input.iter().map(|a| a.zero_point).collect();
            let (w, bias) = m.folded(name, &zeros);
            let (w4, words) = pack4(&w, *width);
            let args = vec![
                StepArg::Slot(x),
                b.constant(w4),
                b.ints(bias),
                StepArg::Slot(y),
                int(p.trunk_width),
                int(words),
                int(*width),
            ];
            b.step("head_acc", args, vec![*width]);
            heads.push(Head { slot: y, width: *width, acc: true });
        } else {
            let scale: Vec<f32> = input.iter().map(|a| a.scale).collect();
            let args = vec![
                StepArg::Slot(x),
                b.floats(&scale),
                b.ints(input.iter().map(|a| a.zero_point as i32)),
                b.floats(&m.model.weights_f32(name)),
                b.floats(&m.model.f32s(&format!("{name}.bias"))),
                StepArg::Slot(y),
                int(p.trunk_width),
                int(*width),
            ];
            b.step("head_dequant_f32", args, vec![*width]);
            heads.push(Head { slot: y, width: *width, acc: false });
        }
    }
    (heads.try_into().ok().expect("three heads"), concat)
}

/// The float launches; returns the heads and the concatenated-features slot.
fn compile_float(b: &mut Builder, model: &Model, p: &Program) -> ([Head; 3], usize) {
    let bias = |layer: &str| model.f32s(&format!("{layer}.bias")).into_owned();
    let kernel = |base: &str, suffix: &str| -> &'static str {
        match (base, suffix) {
            ("conv", "w16") => "conv_f32_w16",
            ("conv", _) => "conv_f32_w32",
            (_, "w16") => "dense_f32_w16",
            _ => "dense_f32_w32",
        }
    };
    let mut x = b.slot(4 * p.seq_channels * p.seq_len);
    for c in &p.convs {
        let (w, suffix) = float_weights(model, &c.layer);
        let y = b.slot(4 * c.out_c * c.t_out());
        let args = vec![
            StepArg::Slot(x),
            b.constant(w),
            b.floats(&bias(&c.layer)),
            StepArg::Slot(y),
            int(c.in_c),
            int(c.t_in),
            int(c.out_c),
            int(c.t_out()),
            int(c.kernel),
            int(c.left),
            flag(c.relu),
            flag(c.pool),
        ];
        b.step(kernel("conv", suffix), args, vec![c.out_c, c.t_out()]);
        x = y;
    }
    let concat = b.slot(4 * p.concat_width());
    let args = vec![
        StepArg::Slot(x),
        StepArg::Slot(concat),
        int(p.gap_channels),
        int(p.gap_steps),
        int(p.concat_width()),
        int(p.concat_offsets().0),
    ];
    b.step("gap_f32", args, vec![p.gap_channels]);
    let mut x = concat;
    let layers = p.denses.iter().map(|d| (&d.layer, d.n_in, d.n_out, d.relu, false));
    let heads = p.heads.iter().map(|(name, width)| (name, p.trunk_width, *width, false, true));
    let mut out = Vec::new();
    for (layer, n_in, n_out, relu, head) in layers.chain(heads) {
        let (w, suffix) = float_weights(model, layer);
        let y = b.slot(4 * n_out);
        let args = vec![
            StepArg::Slot(x),
            b.constant(w),
            b.floats(&bias(layer)),
            StepArg::Slot(y),
            int(n_in),
            int(n_out),
            flag(relu),
        ];
        b.step(kernel("dense", suffix), args, vec![n_out]);
        if head {
            out.push(Head { slot: y, width: n_out, acc: false });
        } else {
            x = y;
        }
    }
    (out.try_into().ok().expect("three heads"), concat)
}

#[cfg(test)]
mod tests {
    use super::{LayerShape, compile, conv_forms, live_blocks, pack_tap_major, pack4};
    use crate::backend::cpu::program::Program;
    use crate::backend::cuda::gpu::SHARED_DEFAULT;
    use crate::backend::cuda::nvrtc::{Param, SOURCES, kernels};
    use crate::backend::launch::StepArg;
    use crate::model::init::{InitOptions, init, random_model, synthetic_ranges};
    use crate::model::quantize::{Int8Options, to_int8};
    use crate::model::{Model, Precision, Preset};

    /// Rows are padded to whole words with zero weights, each row starting on a word.
    #[test]
    fn pack4_pads_rows_with_zeros() {
        let w = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let (packed, words) = pack4(&w, 2);
        assert_eq!(words, 2);
        assert_eq!(packed, [1, 2, 3, 4, 5, 0, 0, 0, 6, 7, 8, 9, 10, 0, 0, 0]);
        assert_eq!(pack4(&w[..8], 2), (w[..8].to_vec(), 1));
    }

    /// Tap-major rows: output o's weight for (tap j, channel c) lands at j*cin + c, rows padded to
    /// 32 bytes with zeros and to 32 rows.
    #[test]
    fn tap_major_packing_reorders_and_pads() {
        let l = LayerShape { cin: 2, t_in: 5, cout: 3, t_out: 5, k: 3, left: 1 };
        // [o][c][j] = 100*o + 10*c + j
        let w: Vec<u8> =
            (0..3).flat_map(|o| (0..2).flat_map(move |c| (0..3).map(move |j| 100 * o + 10 * c + j))).collect();
        let (packed, words) = pack_tap_major(&w, &l);
        assert_eq!(words, 8);
        assert_eq!(packed.len(), 32 * 32);
        for o in 0..3 {
            let row = &packed[o * 32..(o + 1) * 32];
            assert_eq!(&row[..6], &[0, 10, 1, 11, 2, 12].map(|v| v + 100 * o as u8));
            assert!(row[6..].iter().all(|&b| b == 0));
        }
        assert!(packed[3 * 32..].iter().all(|&b| b == 0));
    }

    /// Outputs go channels-last only into a reader that takes them: a tiled convolution or the pool
    /// at the end, never a dp4a convolution; a layer too large for shared memory runs on dp4a.
    #[test]
    fn channels_last_only_between_tiled_readers() {
        let small = LayerShape { cin: 32, t_in: 52, cout: 32, t_out: 52, k: 5, left: 2 };
        let huge = LayerShape { cin: 512, t_in: 200, cout: 32, t_out: 200, k: 3, left: 1 };
        let forms = conv_forms(&[small.clone(), huge, small.clone(), small], Some(SHARED_DEFAULT));
        let seen: Vec<(bool, bool, bool)> =
            forms.iter().map(|f| (f.tiled.is_some(), f.in_channels_last, f.out_channels_last)).collect();
        assert_eq!(seen, [(true, false, false), (false, false, false), (true, false, true), (true, true, true)]);
        let dp4a = conv_forms(&[LayerShape { cin: 4, t_in: 52, cout: 8, t_out: 26, k: 3, left: 1 }], None);
        assert!(dp4a[0].tiled.is_none() && !dp4a[0].out_channels_last);
    }

    /// Long sequences mix the forms: the base preset's second convolution runs on dp4a between tiled
    /// layers at 1600 steps with the default shared memory and at 7300 steps (the conformance
    /// suite's case) with Hopper's opt-in 227 KiB; at 1600 steps opted in, the whole chain fuses.
    #[test]
    fn a_long_sequence_mixes_tiled_and_dp4a_layers() {
        let kernels = |seq_len: usize, shared: usize| -> Vec<&'static str> {
            let inputs = crate::model::graph::InputSizes { seq_channels: 4, seq_len, static_features: 8 };
            let float = random_model(Preset::Base.graph(inputs), Precision::Fp32, 5, 0.0).unwrap();
            let ranges = synthetic_ranges(&float, 16, 5).unwrap();
            let opts = Int8Options { f32_heads: false, calibration: "test".into() };
            let m = to_int8(&float, &ranges, &opts).unwrap().into_model().unwrap();
            let p = Program::compile(m.graph(), &m.shapes).unwrap();
            let c = compile(&m, &p, true, shared).unwrap();
            c.steps.iter().map(|s| c.kernels[s.kernel]).take(3).collect()
        };
        let mixed = ["conv_mma_u8", "conv_u8", "conv_mma_u8"];
        assert_eq!(kernels(1600, SHARED_DEFAULT), mixed);
        assert_eq!(kernels(7300, 227 * 1024), mixed);
        assert_eq!(kernels(1600, 227 * 1024)[0], "convs_mma_u8");
    }

    /// A 32x32 block with one nonzero weight is live; all-zero blocks (and the zero padding) are not.
    #[test]
    fn live_blocks_mark_nonzero_weight_blocks() {
        let words = 16; // two 32-byte reduction steps
        let mut packed = vec![0u8; 64 * words * 4];
        packed[5 * words * 4 + 40] = 1; // tile 0, step 1
        packed[33 * words * 4 + 3] = 0xff; // tile 1, step 0
        assert_eq!(live_blocks(&packed, words), [0, 1, 1, 0]);
    }

    /// The blocks `init --block 32x32` prunes are the blocks the tensor-core kernels skip: the
    /// pruner's order (tap-major for convolutions) is the kernels' reduction order, so about a
    /// quarter of the blocks of a 75%-sparse model are live in the fused convolutions and in the
    /// dense layers alike (conv1, one block, aside).
    #[test]
    fn pruned_32x32_blocks_are_the_skipped_blocks() {
        use crate::model::block_prune::BlockShape;
        let opts = InitOptions {
            preset: Preset::Base,
            precision: Precision::Int8,
            seed: 3,
            sparsity: 0.75,
            inputs: None,
            block: Some(BlockShape { rows: 32, cols: 32 }),
        };
        let m = init(&opts).unwrap().into_model().unwrap();
        let p = Program::compile(m.graph(), &m.shapes).unwrap();
        let c = compile(&m, &p, true, SHARED_DEFAULT).unwrap();
        assert_eq!(c.steps.iter().filter(|s| c.kernels[s.kernel] == "convs_mma_u8").count(), 1);
        // Densities follow Program::layer_macs: conv1..3, fc1, fc2, three heads.
        let macs = p.layer_macs();
        assert_eq!(c.densities.len(), macs.len());
        let (conv2_to_fc2, heads) = (&c.densities[1..5], &c.densities[5..]);
        assert!(conv2_to_fc2.iter().all(|d| (0.15..=0.5).contains(d)), "{:?}", c.densities);
        assert!(heads.iter().all(|&d| d == 1.0), "heads run on dp4a, every weight");
        // What the plan reports as executed: the layers' multiply-adds times their live shares.
        let executed: f64 = macs.iter().zip(&c.densities).map(|(&m, d)| m as f64 * d).sum();
        let share = executed / macs.iter().sum::<u64>() as f64;
        assert!((0.1..0.45).contains(&share), "executed share {share}");
    }

    fn signatures() -> Vec<(String, Vec<Param>)> {
        SOURCES.iter().flat_map(kernels).map(|k| (k.name, k.params)).collect()
    }

    fn model(precision: Precision, f32_heads: bool) -> Model {
        let opts = InitOptions { preset: Preset::Tiny, precision, seed: 3, sparsity: 0.0, inputs: None, block: None };
        if !f32_heads {
            return init(&opts).unwrap().into_model().unwrap();
        }
        let graph = Preset::Tiny.graph(Preset::Tiny.default_inputs());
        let float = random_model(graph, Precision::Fp32, 3, 0.0).unwrap();
        let ranges = synthetic_ranges(&float, 64, 3).unwrap();
        let opts = Int8Options { f32_heads: true, calibration: "test".into() };
        to_int8(&float, &ranges, &opts).unwrap().into_model().unwrap()
    }

    /// Every kernel declared in kernels/cuda is an entry of the PTX NVRTC makes of its source.
    /// Skipped without libnvrtc (CI has it: tests/cuda_kernels.rs requires it there).
    #[test]
    fn every_declared_kernel_is_in_the_ptx() {
        if let Err(reason) = crate::backend::cuda::nvrtc::available() {
            println!("skipped: {reason}");
            return;
        }
        let ptx: Vec<String> =
            SOURCES.iter().map(|s| crate::backend::cuda::nvrtc::compile(s, "sm_80").unwrap()).collect();
        for (name, _) in signatures() {
            assert!(ptx.iter().any(|p| p.contains(&format!(".entry {name}("))), "no entry {name} in the PTX");
        }
    }

    /// Each launch passes what its kernel declares: the i64 count the plan puts first, then a
    /// pointer for every buffer and an i32 for every value, in the declared order. The launch is
    /// untyped at run time (a mismatch would be undefined behaviour on the GPU), so it is checked
    /// here, without one, for every precision the backend takes.
    #[test]
    fn launches_match_the_kernel_signatures() {
        let signatures = signatures();
        let models = [
            model(Precision::Int8, false),
            model(Precision::Int8, true),
            model(Precision::Fp32, false),
            model(Precision::Fp16, false),
        ];
        for (m, tensor_cores) in models.iter().flat_map(|m| [(m, false), (m, true)]) {
            let p = Program::compile(m.graph(), &m.shapes).unwrap();
            let c = compile(m, &p, tensor_cores, SHARED_DEFAULT).unwrap();
            for step in &c.steps {
                let name = c.kernels[step.kernel];
                let (_, params) =
                    signatures.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no kernel {name}"));
                let passed: Vec<Param> = std::iter::once(Param::I64)
                    .chain(step.args.iter().map(|a| match a {
                        StepArg::Slot(_) | StepArg::Const(_) => Param::Pointer,
                        StepArg::Int(_) | StepArg::Tracing => Param::I32,
                    }))
                    .collect();
                assert_eq!(&passed, params, "{name} ({})", m.precision());
            }
        }
    }
}
