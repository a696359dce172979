//! A model as a fixed list of kernel launches, shared by the device backends (OpenCL, CUDA): the
//! network shape the CPU backend recognises turned into launches over per-batch buffers ("slots",
//! one per fusion boundary, `[customer][…]`), the weights and requantization parameters they take,
//! which bytes of which slot are the trace's fusion-boundary tensors, and how the host encodes the
//! inputs.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::backend::cpu::int8::fold_zero_points;
use crate::engine::{Batch, HeadOutputs, HeadValues};
use crate::error::Result;
use crate::model::quant::{ActQuant, Quantization, SegmentMap};
use crate::model::{Model, Precision};

/// The slot the host writes the sequence into.
pub(crate) const SEQ_SLOT: usize = 0;

/// A kernel argument as the plan stores it.
pub(crate) enum StepArg {
    /// A per-batch buffer.
    Slot(usize),
    /// A buffer uploaded when the plan was built.
    Const(usize),
    Int(i32),
    /// An i32: 1 in a traced run (kernels that keep boundaries on chip then also write them out).
    Tracing,
}

/// One kernel launch over `[customers, per_row…]` work-items, or over blocks of customers.
pub(crate) struct Step {
    pub(crate) kernel: usize,
    pub(crate) args: Vec<StepArg>,
    pub(crate) per_row: Vec<usize>,
    /// `Some` for a kernel whose blocks each take a tile of customers (CUDA tensor cores).
    pub(crate) tile: Option<Tile>,
}

/// The launch shape of a tiled kernel: `customers` per block, with that much shared memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tile {
    pub(crate) customers: usize,
    pub(crate) shared_bytes: usize,
}

/// A fusion-boundary tensor: bytes `range` of each customer's row of `slot`.
pub(crate) struct Boundary {
    pub(crate) tensor: String,
    pub(crate) slot: usize,
    pub(crate) range: Range<usize>,
    /// `Some((steps, channels))` when the device keeps the tensor channels-last (`[step][channel]`);
    /// the trace shows every tensor as the reference has it, `[channel][step]`.
    pub(crate) channels_last: Option<(usize, usize)>,
}

pub(crate) struct Head {
    pub(crate) slot: usize,
    pub(crate) width: usize,
    /// i32 accumulators (int8 heads) or f32 logits.
    pub(crate) acc: bool,
}

/// The model input values belong to.
#[derive(Clone, Copy)]
pub(crate) enum Input {
    Seq,
    Static,
}

/// How the host encodes inputs for the device.
pub(crate) enum Encoding {
    /// u8, quantized with the model's input parameters.
    U8 {
        seq: ActQuant,
        stat: ActQuant,
    },
    F32,
}

/// Values below which encoding stays on one thread (starting threads would cost more).
const ENCODE_VALUES_PER_THREAD: usize = 1 << 16;

/// `work` on each (input, output) chunk pair: on this thread when `threads` is 1, else one scoped
/// thread per pair.
fn in_parallel<'a>(
    threads: usize,
    chunks: impl Iterator<Item = (&'a [f32], &'a mut [u8])>,
    work: impl Fn(&[f32], &mut [u8]) + Sync,
) {
    if threads == 1 {
        chunks.for_each(|(x, out)| work(x, out));
        return;
    }
    let work = &work;
    std::thread::scope(|s| {
        for (x, out) in chunks {
            s.spawn(move || work(x, out));
        }
    });
}

impl Encoding {
    pub(crate) fn bytes(&self, x: &[f32], input: Input) -> Vec<u8> {
        let mut out = vec![0u8; x.len() * self.width()];
        self.encode_into(x, input, &mut out, 1);
        out
    }

    /// Encodes `x` into `out` (`x.len() * width()` bytes), on up to `threads` threads.
    pub(crate) fn encode_into(&self, x: &[f32], input: Input, out: &mut [u8], threads: usize) {
        let e = self.width();
        debug_assert_eq!(out.len(), x.len() * e);
        let threads = threads.min(x.len() / ENCODE_VALUES_PER_THREAD).max(1);
        let per = x.len().div_ceil(threads).max(1);
        in_parallel(threads, x.chunks(per).zip(out.chunks_mut(per * e)), |x, out| self.encode_chunk(x, input, out));
    }

    fn encode_chunk(&self, x: &[f32], input: Input, out: &mut [u8]) {
        match (self, input) {
            (Encoding::U8 { seq: q, .. }, Input::Seq) | (Encoding::U8 { stat: q, .. }, Input::Static) => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = q.quantize(v);
                }
            }
            (Encoding::F32, _) => out.copy_from_slice(bytemuck::cast_slice(x)),
        }
    }

    /// The concatenated-features rows of `batch` as the host sends them: its static features
    /// encoded at `offset` of rows `width` elements wide, the rest zero (the pooled part is the
    /// device's to write).
    pub(crate) fn concat_rows(&self, batch: &Batch, width: usize, offset: usize, static_features: usize) -> Vec<u8> {
        let mut rows = vec![0u8; batch.len() * width * self.width()];
        self.concat_rows_into(batch.stat(), (width, offset, static_features), &mut rows, 1);
        rows
    }

    /// As [`Self::concat_rows`] for the static features `stat` (whole rows), into `out`, on up to
    /// `threads` threads; `layout`: (row width, offset, static features) in elements.
    pub(crate) fn concat_rows_into(&self, stat: &[f32], layout: (usize, usize, usize), out: &mut [u8], threads: usize) {
        let (width, offset, static_features) = layout;
        let e = self.width();
        let rows = stat.len() / static_features.max(1);
        let threads = threads.min(stat.len() / ENCODE_VALUES_PER_THREAD).max(1);
        let per = rows.div_ceil(threads).max(1);
        let chunks = stat.chunks(per * static_features).zip(out.chunks_mut(per * width * e));
        in_parallel(threads, chunks, |stat, out| {
            for (row, x) in out.chunks_exact_mut(width * e).zip(stat.chunks_exact(static_features)) {
                row.fill(0);
                self.encode_chunk(x, Input::Static, &mut row[offset * e..(offset + static_features) * e]);
            }
        });
    }

    pub(crate) fn width(&self) -> usize {
        match self {
            Encoding::U8 { .. } => 1,
            Encoding::F32 => 4,
        }
    }
}

/// What the int8 layers need from the model's quantization entry.
pub(crate) struct Int8Params<'a> {
    pub(crate) model: &'a Model,
    pub(crate) q: &'a Quantization,
    pub(crate) segments: SegmentMap,
}

impl Int8Params<'_> {
    pub(crate) fn z(&self, tensor: &str) -> i32 {
        self.q.activations[tensor].zero_point as i32
    }

    /// The parameters of each element of a layer's input.
    pub(crate) fn input(&self, layer: &str) -> Vec<ActQuant> {
        let node = self.model.graph().node(layer).expect("compiled from this graph");
        self.segments.per_element(&node.inputs[0]).expect("a u8 input of a validated int8 model")
    }

    pub(crate) fn output_z(&self, layer: &str) -> i32 {
        self.z(&self.model.graph().node(layer).expect("compiled from this graph").output)
    }

    /// Weights, and the bias with the zero-point terms folded in (`zeros` per reduction element).
    pub(crate) fn folded(&self, layer: &str, zeros: &[u8]) -> (Vec<u8>, Vec<i32>) {
        let w = self.model.i8s(&format!("{layer}.weight"));
        let b = self.model.i32s(&format!("{layer}.bias"));
        let reduction = w.len() / b.len();
        let zeros: Vec<u8> = zeros.iter().copied().cycle().take(reduction).collect();
        (bytemuck::cast_slice(&w).to_vec(), fold_zero_points(&w, &b, &zeros))
    }

    pub(crate) fn requant(&self, layer: &str) -> (Vec<i32>, Vec<i32>) {
        let r = self.q.layers[layer].requants();
        (r.iter().map(|r| r.multiplier).collect(), r.iter().map(|r| r.shift as i32).collect())
    }
}

pub(crate) fn flag(b: bool) -> StepArg {
    StepArg::Int(b as i32)
}

pub(crate) fn int(v: usize) -> StepArg {
    StepArg::Int(i32::try_from(v).expect("layer sizes are validated far below i32::MAX"))
}

/// A float layer's weights as uploaded, with the suffix of the kernels that read them.
pub(crate) fn float_weights(model: &Model, layer: &str) -> (Vec<u8>, &'static str) {
    let name = format!("{layer}.weight");
    match model.layer_precision(layer) {
        Precision::Fp16 => (bytemuck::cast_slice(&model.f16s(&name)).to_vec(), "w16"),
        _ => (bytemuck::cast_slice(&model.f32s(&name)).to_vec(), "w32"),
    }
}

/// Runs `batch` in consecutive parts of at most `part_rows` customers through `run`, the outputs
/// joined in order exactly as one run would give them (a batch that fits is one part).
pub(crate) fn in_parts(
    batch: &Batch,
    part_rows: usize,
    mut trace: Option<&mut BTreeMap<String, Vec<u8>>>,
    mut run: impl FnMut(&Batch, Option<&mut BTreeMap<String, Vec<u8>>>) -> Result<HeadOutputs>,
) -> Result<HeadOutputs> {
    if batch.len() <= part_rows {
        return run(batch, trace);
    }
    let mut joined: Option<HeadOutputs> = None;
    for start in (0..batch.len()).step_by(part_rows) {
        let part = run(&batch.slice(start..(start + part_rows).min(batch.len())), trace.as_deref_mut())?;
        append(&mut joined, part);
    }
    Ok(joined.expect("a batch longer than one part has parts"))
}

/// Adds a part's outputs to those of the parts before it.
pub(crate) fn append(joined: &mut Option<HeadOutputs>, part: HeadOutputs) {
    match joined {
        None => *joined = Some(part),
        Some(all) => join(all, part),
    }
}

/// The head outputs of consecutive parts of a batch, joined in order.
fn join(all: &mut HeadOutputs, part: HeadOutputs) {
    for (into, more) in [(&mut all.ltv, part.ltv), (&mut all.churn, part.churn), (&mut all.segment, part.segment)] {
        match (into, more) {
            (HeadValues::Accumulators(a), HeadValues::Accumulators(b)) => a.extend(b),
            (HeadValues::Logits(a), HeadValues::Logits(b)) => a.extend(b),
            _ => unreachable!("a head keeps its kind across parts"),
        }
    }
}

/// The heads' outputs (i32 accumulators or f32 logits) and, with `trace`, the fusion-boundary
/// tensors appended to it, from the slots' bytes as `read` copies them off the device (all rows of
/// a slot; each slot read once).
pub(crate) fn read_outputs(
    heads: &[Head; 3],
    boundaries: &[Boundary],
    slots: &[usize],
    trace: Option<&mut BTreeMap<String, Vec<u8>>>,
    mut read: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<HeadOutputs> {
    let mut done: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut fetch = |slot: usize| -> Result<Vec<u8>> {
        if let Some(v) = done.get(&slot) {
            return Ok(v.clone());
        }
        let v = read(slot)?;
        done.insert(slot, v.clone());
        Ok(v)
    };
    let values = |h: &Head, bytes: Vec<u8>| {
        debug_assert_eq!(bytes.len() % (h.width * 4), 0, "whole rows of 4-byte values");
        if h.acc {
            HeadValues::Accumulators(bytemuck::pod_collect_to_vec(&bytes))
        } else {
            HeadValues::Logits(bytemuck::pod_collect_to_vec(&bytes))
        }
    };
    let [ltv, churn, segment] = heads;
    let out = HeadOutputs {
        ltv: values(ltv, fetch(ltv.slot)?),
        churn: values(churn, fetch(churn.slot)?),
        segment: values(segment, fetch(segment.slot)?),
    };
    if let Some(trace) = trace {
        for bd in boundaries {
            let bytes = fetch(bd.slot)?;
            let values = trace.entry(bd.tensor.clone()).or_default();
            for row in bytes.chunks_exact(slots[bd.slot]) {
                let part = &row[bd.range.clone()];
                match bd.channels_last {
                    None => values.extend_from_slice(part),
                    Some((steps, channels)) => {
                        values.extend((0..channels).flat_map(|c| (0..steps).map(move |t| part[t * channels + c])))
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoding on several threads writes exactly what one thread does, for both encodings and
    /// both inputs, with chunks that do not divide the rows evenly.
    #[test]
    fn threaded_encoding_equals_one_thread() {
        let seq = ActQuant { scale: 0.05, inv_scale: 20.0, zero_point: 7 };
        let stat = ActQuant { scale: 0.1, inv_scale: 10.0, zero_point: 30 };
        let (rows, per, width, offset) = (3_001, 97, 130, 33);
        let x: Vec<f32> = (0..rows * per).map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 3.0).collect();
        for encoding in [Encoding::U8 { seq, stat }, Encoding::F32] {
            let e = encoding.width();
            let mut one = vec![0u8; x.len() * e];
            let mut three = vec![1u8; x.len() * e];
            encoding.encode_into(&x, Input::Seq, &mut one, 1);
            encoding.encode_into(&x, Input::Seq, &mut three, 3);
            assert!(one == three);
            let mut one = vec![0u8; rows * width * e];
            let mut three = vec![1u8; rows * width * e];
            encoding.concat_rows_into(&x, (width, offset, per), &mut one, 1);
            encoding.concat_rows_into(&x, (width, offset, per), &mut three, 3);
            assert!(one == three);
            assert!(one[..offset * e].iter().all(|&b| b == 0), "the pooled part stays zero");
        }
    }
}
