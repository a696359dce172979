//! A model compiled into OpenCL launches: the network shape the CPU backend recognises
//! ([`Program`]) turned into a fixed list of kernel launches over per-batch buffers ("slots", one per
//! fusion boundary, `[customer][…]`), the weights uploaded once (int8: zero points folded into the
//! biases, as the CPU backend folds them). `OpenclPlan` runs it. The launch types are shared with the
//! CUDA backend (crate::backend::launch).

use std::ops::Range;

use opencl3::kernel::Kernel;
use opencl3::memory::Buffer;
use opencl3::program::Program as ClProgram;

use super::binary::MODEL_HASH_CL;
use super::runtime::Runtime;
use super::{KernelForm, backend_err};
use crate::backend::cpu::program::Program;
use crate::backend::launch::{Boundary, Encoding, Head, Int8Params, Step, StepArg, flag, float_weights, int};
use crate::error::Result;
use crate::model::graph::{SEQ, STATIC};
use crate::model::{Model, Precision};

const INT8_MATH_CL: &str = include_str!("../../../kernels/opencl/int8_math.cl");
const INT8_CL: &str = include_str!("../../../kernels/opencl/int8.cl");
const INT8_SWI_CL: &str = include_str!("../../../hw/fpga/int8_swi.cl");
const FLOAT_CL: &str = include_str!("../../../kernels/opencl/float.cl");
const POOL_CL: &str = include_str!("../../../kernels/opencl/pool.cl");
/// float.cl is built once per weight type; these name each copy's kernels (`conv_f32_w16`, …).
const F32_WEIGHTS: &str = "#define WEIGHT float\n#define LOAD_W(p, i) ((p)[i])\n#define NAME(base) base##_w32\n";
const F16_WEIGHTS: &str = "#undef WEIGHT\n#undef LOAD_W\n#undef NAME\n#define WEIGHT half\n#define LOAD_W(p, i) vload_half((i), (p))\n#define NAME(base) base##_w16\n";

/// The OpenCL C a model of `precision` needs, with a name for errors. Offline builds for a board
/// compile the same sources (with `-DLTVX_MODEL_HASH`).
pub(super) fn sources(precision: Precision, form: KernelForm) -> (&'static str, Vec<&'static str>) {
    match (precision, form) {
        (Precision::Int8, KernelForm::NdRange) => {
            ("kernels/opencl/int8.cl", vec![INT8_MATH_CL, INT8_CL, MODEL_HASH_CL])
        }
        (Precision::Int8, KernelForm::SingleWorkItem) => {
            ("hw/fpga/int8_swi.cl", vec![INT8_MATH_CL, INT8_SWI_CL, MODEL_HASH_CL])
        }
        // Float models have one form (OpenCl::supports refuses the other).
        (Precision::Fp32 | Precision::Fp16, _) => (
            "kernels/opencl/float.cl and pool.cl",
            vec![F32_WEIGHTS, FLOAT_CL, F16_WEIGHTS, FLOAT_CL, POOL_CL, MODEL_HASH_CL],
        ),
    }
}

/// Strict IEEE arithmetic: no fast-math, denormals kept (the float tolerance assumes it).
pub(super) const BUILD_OPTIONS: &str = "-cl-std=CL1.2";

/// What a model compiles into.
pub(super) struct Compiled {
    pub(super) kernels: Vec<(&'static str, Kernel)>,
    pub(super) consts: Vec<Buffer<u8>>,
    /// Bytes per customer of each slot.
    pub(super) slots: Vec<usize>,
    pub(super) steps: Vec<Step>,
    pub(super) boundaries: Vec<Boundary>,
    pub(super) heads: [Head; 3],
    /// The concatenated-features slot.
    pub(super) concat: usize,
    pub(super) encoding: Encoding,
}

/// Compiles `p` (of `model`) into launches of `program`'s kernels on `runtime`'s device.
pub(super) fn compile(runtime: &Runtime, program: ClProgram, model: &Model, p: &Program) -> Result<Compiled> {
    let mut b = Builder {
        runtime,
        program,
        kernels: Vec::new(),
        consts: Vec::new(),
        slots: Vec::new(),
        steps: Vec::new(),
        boundaries: Vec::new(),
    };
    let (encoding, (heads, concat)) = match model.precision() {
        Precision::Int8 => {
            let q = model
                .quantization()
                .ok_or_else(|| backend_err("an int8 model without quantization parameters".into()))?;
            let segments = q.segment_map(model.graph(), &model.shapes)?;
            let params = Int8Params { model, q, segments };
            let heads = compile_int8(&mut b, &params, p)?;
            (Encoding::U8 { seq: q.activations[SEQ], stat: q.activations[STATIC] }, heads)
        }
        Precision::Fp32 | Precision::Fp16 => (Encoding::F32, compile_float(&mut b, model, p)?),
    };
    let Builder { kernels, consts, slots, steps, boundaries, .. } = b;
    Ok(Compiled { kernels, consts, slots, steps, boundaries, heads, concat, encoding })
}

/// Collects slots, constants and launches while a model is compiled.
struct Builder<'a> {
    runtime: &'a Runtime,
    program: ClProgram,
    kernels: Vec<(&'static str, Kernel)>,
    consts: Vec<Buffer<u8>>,
    slots: Vec<usize>,
    steps: Vec<Step>,
    boundaries: Vec<Boundary>,
}

impl Builder<'_> {
    fn constant(&mut self, bytes: &[u8]) -> Result<StepArg> {
        self.consts.push(self.runtime.constant(bytes).map_err(backend_err)?);
        Ok(StepArg::Const(self.consts.len() - 1))
    }

    fn ints(&mut self, v: impl IntoIterator<Item = i32>) -> Result<StepArg> {
        self.constant(bytemuck::cast_slice(&v.into_iter().collect::<Vec<i32>>()))
    }

    fn floats(&mut self, v: &[f32]) -> Result<StepArg> {
        self.constant(bytemuck::cast_slice(v))
    }

    fn slot(&mut self, row_bytes: usize) -> usize {
        self.slots.push(row_bytes);
        self.slots.len() - 1
    }

    fn step(&mut self, kernel: &'static str, args: Vec<StepArg>, per_row: Vec<usize>) -> Result<()> {
        let index = match self.kernels.iter().position(|(n, _)| *n == kernel) {
            Some(i) => i,
            None => {
                let k = self.runtime.kernel(&self.program, kernel).map_err(backend_err)?;
                self.kernels.push((kernel, k));
                self.kernels.len() - 1
            }
        };
        self.steps.push(Step { kernel: index, args, per_row, tile: None });
        Ok(())
    }

    fn boundary(&mut self, tensor: &str, slot: usize, range: Range<usize>) {
        self.boundaries.push(Boundary { tensor: tensor.to_string(), slot, range, channels_last: None });
    }
}

/// The int8 launches; returns the heads and the concatenated-features slot.
fn compile_int8(b: &mut Builder, m: &Int8Params, p: &Program) -> Result<([Head; 3], usize)> {
    let mut x = b.slot(p.seq_channels * p.seq_len);
    for c in &p.convs {
        let z_in = m.input(&c.layer)[0].zero_point;
        let (w, bias) = m.folded(&c.layer, &[z_in]);
        let (mult, shift) = m.requant(&c.layer);
        let args = vec![StepArg::Slot(x), b.constant(&w)?, b.ints(bias)?, b.ints(mult)?, b.ints(shift)?];
        let y = b.slot(c.out_c * c.t_out());
        let sizes = [
            int(c.in_c),
            int(c.t_in),
            int(c.kernel),
            int(c.left),
            StepArg::Int(z_in as i32),
            StepArg::Int(m.output_z(&c.layer)),
        ];
        b.step(
            "conv_u8",
            args.into_iter().chain([StepArg::Slot(y)]).chain(sizes).chain([flag(c.relu), flag(c.pool)]).collect(),
            vec![c.out_c, c.t_out()],
        )?;
        b.boundary(&c.output, y, 0..c.out_c * c.t_out());
        x = y;
    }
    let concat = b.slot(p.concat_width());
    let gap_off = p.concat_offsets().0;
    let gap = m.requant(&p.gap_layer);
    let gap_z_in = m.input(&p.gap_layer)[0].zero_point as i32;
    let args = vec![
        StepArg::Slot(x),
        StepArg::Slot(concat),
        int(p.gap_steps),
        int(p.concat_width()),
        int(gap_off),
        StepArg::Int(gap.0[0]),
        StepArg::Int(gap.1[0]),
        StepArg::Int(gap_z_in),
        StepArg::Int(m.z(&p.gap_output)),
    ];
    b.step("gap_u8", args, vec![p.gap_channels])?;
    b.boundary(&p.gap_output, concat, gap_off..gap_off + p.gap_channels);
    if let Some(t) = &p.concat_output {
        b.boundary(t, concat, 0..p.concat_width());
    }
    let mut x = concat;
    for d in &p.denses {
        let zeros: Vec<u8> = m.input(&d.layer).iter().map(|a| a.zero_point).collect();
        let (w, bias) = m.folded(&d.layer, &zeros);
        let (mult, shift) = m.requant(&d.layer);
        let y = b.slot(d.n_out);
        let args =
            vec![StepArg::Slot(x), b.constant(&w)?, b.ints(bias)?, b.ints(mult)?, b.ints(shift)?, StepArg::Slot(y)];
        b.step(
            "dense_u8",
            args.into_iter().chain([int(d.n_in), StepArg::Int(m.output_z(&d.layer)), flag(d.relu)]).collect(),
            vec![d.n_out],
        )?;
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
            let args = vec![StepArg::Slot(x), b.constant(&w)?, b.ints(bias)?, StepArg::Slot(y), int(p.trunk_width)];
            b.step("head_acc", args, vec![*width])?;
            heads.push(Head { slot: y, width: *width, acc: true });
        } else {
            let scale: Vec<f32> = input.iter().map(|a| a.scale).collect();
            let args = vec![
                StepArg::Slot(x),
                b.floats(&scale)?,
                b.ints(input.iter().map(|a| a.zero_point as i32))?,
                b.floats(&m.model.weights_f32(name))?,
                b.floats(&m.model.f32s(&format!("{name}.bias")))?,
                StepArg::Slot(y),
                int(p.trunk_width),
            ];
            b.step("head_dequant_f32", args, vec![*width])?;
            heads.push(Head { slot: y, width: *width, acc: false });
        }
    }
    Ok((heads.try_into().ok().expect("three heads"), concat))
}

/// The float launches; returns the heads and the concatenated-features slot.
fn compile_float(b: &mut Builder, model: &Model, p: &Program) -> Result<([Head; 3], usize)> {
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
        let args = vec![StepArg::Slot(x), b.constant(&w)?, b.floats(&bias(&c.layer))?, StepArg::Slot(y)];
        let sizes = [int(c.in_c), int(c.t_in), int(c.kernel), int(c.left), flag(c.relu), flag(c.pool)];
        b.step(kernel("conv", suffix), args.into_iter().chain(sizes).collect(), vec![c.out_c, c.t_out()])?;
        x = y;
    }
    let concat = b.slot(4 * p.concat_width());
    let args = vec![
        StepArg::Slot(x),
        StepArg::Slot(concat),
        int(p.gap_steps),
        int(p.concat_width()),
        int(p.concat_offsets().0),
    ];
    b.step("gap_f32", args, vec![p.gap_channels])?;
    let mut x = concat;
    let layers = p.denses.iter().map(|d| (&d.layer, d.n_in, d.n_out, d.relu, false));
    let heads = p.heads.iter().map(|(name, width)| (name, p.trunk_width, *width, false, true));
    let mut out = Vec::new();
    for (layer, n_in, n_out, relu, head) in layers.chain(heads) {
        let (w, suffix) = float_weights(model, layer);
        let y = b.slot(4 * n_out);
        let args =
            vec![StepArg::Slot(x), b.constant(&w)?, b.floats(&bias(layer))?, StepArg::Slot(y), int(n_in), flag(relu)];
        b.step(kernel("dense", suffix), args, vec![n_out])?;
        if head {
            out.push(Head { slot: y, width: n_out, acc: false });
        } else {
            x = y;
        }
    }
    Ok((out.try_into().ok().expect("three heads"), concat))
}
