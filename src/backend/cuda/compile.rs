//! A model compiled into launches of the kernels in kernels/cuda: the same slots, boundaries and
//! heads as the OpenCL backend (crate::backend::launch), with the weights in the form the CUDA
//! kernels read. int8 weights are packed `[output][reduction padded to a multiple of 4]` with zero
//! weights in the padding, so four of them are one word for dp4a; biases have the zero-point terms
//! folded in. Every CUDA kernel takes the number of output values first; the plan passes it, so the
//! steps hold only the arguments after it. Weights stay on the host here: the plan uploads them.

use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Int8Params, Step, StepArg, flag, float_weights, int};
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
}

/// Compiles `p` (of `model`) into launches.
pub(super) fn compile(model: &Model, p: &Program) -> Result<Compiled> {
    let mut b = Builder::default();
    let (encoding, (heads, concat)) = match model.precision() {
        Precision::Int8 => {
            let q = model
                .quantization()
                .ok_or_else(|| backend_err("an int8 model without quantization parameters".into()))?;
            let segments = q.segment_map(model.graph(), &model.shapes)?;
            let heads = compile_int8(&mut b, &Int8Params { model, q, segments }, p);
            (Encoding::U8 { seq: q.activations[SEQ], stat: q.activations[STATIC] }, heads)
        }
        Precision::Fp32 | Precision::Fp16 => (Encoding::F32, compile_float(&mut b, model, p)),
    };
    let Builder { kernels, consts, slots, steps, boundaries } = b;
    Ok(Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding })
}

#[derive(Default)]
struct Builder {
    kernels: Vec<&'static str>,
    consts: Vec<Vec<u8>>,
    slots: Vec<usize>,
    steps: Vec<Step>,
    boundaries: Vec<Boundary>,
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
        let index = self.kernels.iter().position(|n| *n == kernel).unwrap_or_else(|| {
            self.kernels.push(kernel);
            self.kernels.len() - 1
        });
        self.steps.push(Step { kernel: index, args, per_row });
    }

    fn boundary(&mut self, tensor: &str, slot: usize, range: std::ops::Range<usize>) {
        self.boundaries.push(Boundary { tensor: tensor.to_string(), slot, range });
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

/// The int8 launches; returns the heads and the concatenated-features slot.
fn compile_int8(b: &mut Builder, m: &Int8Params, p: &Program) -> ([Head; 3], usize) {
    let mut x = b.slot(p.seq_channels * p.seq_len);
    for c in &p.convs {
        let z_in = m.input(&c.layer)[0].zero_point;
        let (w, bias) = m.folded(&c.layer, &[z_in]);
        let (w4, words) = pack4(&w, c.out_c);
        let (mult, shift) = m.requant(&c.layer);
        let y = b.slot(c.out_c * c.t_out());
        let args = vec![
            StepArg::Slot(x),
            b.constant(w4),
            b.ints(bias),
            b.ints(mult),
            b.ints(shift),
            StepArg::Slot(y),
            int(c.in_c),
            int(c.t_in),
            int(c.out_c),
            int(c.t_out()),
            int(c.kernel),
            int(c.left),
            int(words),
            StepArg::Int(z_in as i32),
            StepArg::Int(m.output_z(&c.layer)),
            flag(c.relu),
            flag(c.pool),
        ];
        b.step("conv_u8", args, vec![c.out_c, c.t_out()]);
        b.boundary(&c.output, y, 0..c.out_c * c.t_out());
        x = y;
    }
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
    ];
    b.step("gap_u8", args, vec![p.gap_channels]);
    b.boundary(&p.gap_output, concat, gap_off..gap_off + p.gap_channels);
    if let Some(t) = &p.concat_output {
        b.boundary(t, concat, 0..p.concat_width());
    }
    let mut x = concat;
    for d in &p.denses {
        let zeros: Vec<u8> = m.input(&d.layer).iter().map(|a| a.zero_point).collect();
        let (w, bias) = m.folded(&d.layer, &zeros);
        let (w4, words) = pack4(&w, d.n_out);
        let (mult, shift) = m.requant(&d.layer);
        let y = b.slot(d.n_out);
        let args = vec![
            StepArg::Slot(x),
            b.constant(w4),
            b.ints(bias),
            b.ints(mult),
            b.ints(shift),
            StepArg::Slot(y),
            int(d.n_in),
            int(words),
            int(d.n_out),
            StepArg::Int(m.output_z(&d.layer)),
            flag(d.relu),
        ];
        b.step("dense_u8", args, vec![d.n_out]);
        b.boundary(&d.output, y, 0..d.n_out);
        x = y;
    }
    let mut heads = Vec::new();
    for (name, width) in &p.heads {
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
    use super::{compile, pack4};
    use crate::backend::cpu::program::Program;
    use crate::backend::cuda::nvrtc::SOURCES;
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

    /// What a kernel parameter takes, read from its declaration in kernels/cuda.
    #[derive(Debug, Clone, PartialEq)]
    enum Param {
        Pointer,
        I32,
        I64,
    }

    /// Every extern "C" kernel of kernels/cuda with its parameters, the float file's per-weight-type
    /// macro expanded by hand (its suffixes are read from the instantiations).
    fn signatures() -> Vec<(String, Vec<Param>)> {
        let mut out = Vec::new();
        for source in &SOURCES {
            let text = source.text.replace("\\\n", " ");
            let suffixes: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("WEIGHT_KERNELS("))
                .filter_map(|rest| rest.split(',').nth(1))
                .map(|s| s.trim().trim_end_matches(')'))
                .collect();
            for decl in text.split("__global__ void ").skip(1) {
                let (name, rest) = decl.split_once('(').unwrap();
                let params = rest.split_once(')').unwrap().0.split(',').map(|p| {
                    if p.contains('*') {
                        Param::Pointer
                    } else if p.contains("long long") {
                        Param::I64
                    } else {
                        assert!(p.trim().starts_with("int "), "unexpected parameter {p:?} of {name}");
                        Param::I32
                    }
                });
                let params: Vec<Param> = params.collect();
                match name.trim().strip_suffix("##SUFFIX") {
                    Some(base) => out.extend(suffixes.iter().map(|s| (format!("{base}{s}"), params.clone()))),
                    None => out.push((name.trim().to_string(), params)),
                }
            }
        }
        out
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
        for m in &models {
            let p = Program::compile(m.graph(), &m.shapes).unwrap();
            let c = compile(m, &p).unwrap();
            for step in &c.steps {
                let name = c.kernels[step.kernel];
                let (_, params) =
                    signatures.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no kernel {name}"));
                let passed: Vec<Param> = std::iter::once(Param::I64)
                    .chain(step.args.iter().map(|a| match a {
                        StepArg::Slot(_) | StepArg::Const(_) => Param::Pointer,
                        StepArg::Int(_) => Param::I32,
                    }))
                    .collect();
                assert_eq!(&passed, params, "{name} ({})", m.precision());
            }
        }
    }
}
