//! Runs an exported kernel (`ltvx hw export`) on an OpenCL device through the OpenCL backend's
//! runtime — PoCL in CI, an FPGA emulator or board elsewhere — and compares its head accumulators
//! with the reference backend's, bit for bit. This is how the generated source is proven before
//! hours of synthesis are spent on it (`ltvx hw verify`, and the tests).

use crate::backend::Plan;
use std::path::Path;

use crate::backend::opencl::binary::{check_model, load};
use crate::backend::opencl::runtime::{Arg, Profile, Runtime};
use crate::backend::reference::ReferencePlan;
use crate::engine::{Batch, HeadValues};
use crate::model::Model;

use super::export::{KERNEL, STREAM};
use super::net::Net;

/// The three heads' i32 accumulators, `[customer][output]` each.
pub type Heads = [Vec<i32>; 3];

/// Where the kernel comes from: the exported source, built for the device, or an offline-compiled
/// binary of it (aoc, v++), loaded as `--fpga-binary` loads one.
pub enum Kernel<'a> {
    Source(&'a str),
    Binary(&'a Path),
}

/// Builds or loads the kernel on `rt`'s device (refused unless it carries `model`'s hash) and
/// scores `batch`.
pub fn run(rt: &Runtime, what: &str, kernel: Kernel, model: &Model, net: &Net, batch: &Batch) -> Result<Heads, String> {
    let program = match kernel {
        Kernel::Source(source) => rt.build(what, &[source], "-cl-std=CL1.2")?,
        Kernel::Binary(path) => load(rt, path)?,
    };
    check_model(rt, &program, what, model)?;
    // A streaming build (STREAM=1) has one kernel per stage instead, which this host does not drive.
    let kernel = rt.kernel(&program, KERNEL).map_err(|e| {
        format!("{what}: {e}; a streaming build (-D{STREAM})? hw verify runs the single task: build without STREAM=1")
    })?;
    let rows = batch.len();
    let mut events = Vec::new();
    // Inputs quantized on the host (docs/NUMERICS.md A); a zero-sized buffer is not allowed.
    let mut upload = |values: &[f32], q: &crate::model::quant::ActQuant| -> Result<_, String> {
        let bytes: Vec<u8> = values.iter().map(|&v| q.quantize(v)).collect();
        let mut buf = rt.scratch(bytes.len().max(1))?;
        if !bytes.is_empty() {
            rt.write(&mut buf, &bytes, &mut events)?;
        }
        Ok(buf)
    };
    let seq = upload(batch.seq(), &net.seq)?;
    let stat = upload(batch.stat(), &net.stat)?;
    let outs = net.heads.iter().map(|h| rt.scratch((rows * h.outputs() * 4).max(4))).collect::<Result<Vec<_>, _>>()?;
    let rows_arg = i32::try_from(rows).map_err(|_| format!("{rows} customers are more than one launch takes"))?;
    let args = [
        Arg::Mem(&seq),
        Arg::Mem(&stat),
        Arg::Mem(&outs[0]),
        Arg::Mem(&outs[1]),
        Arg::Mem(&outs[2]),
        Arg::Int(rows_arg),
    ];
    rt.launch(&kernel, KERNEL, &args, &[1], Some(&[1]), &mut events)?;
    let mut heads: Heads = Default::default();
    for ((h, buf), out) in net.heads.iter().zip(&outs).zip(heads.iter_mut()) {
        let mut bytes = vec![0u8; rows * h.outputs() * 4];
        rt.read(buf, &mut bytes, &mut events)?;
        *out = bytemuck::pod_collect_to_vec(&bytes);
    }
    rt.settle(events, &mut Profile::default())?;
    Ok(heads)
}

/// The reference backend's head accumulators for `batch`.
pub fn reference(model: &Model, batch: &Batch) -> Result<Heads, String> {
    let out = ReferencePlan::new(model).run(batch).map_err(|e| e.to_string())?;
    let acc = |v: HeadValues| match v {
        HeadValues::Accumulators(a) => Ok(a),
        HeadValues::Logits(_) => Err("a float head: the export is int8 heads only".to_string()),
    };
    Ok([acc(out.ltv)?, acc(out.churn)?, acc(out.segment)?])
}

/// The first disagreement between `got` and `want`, as `head[customer][output]: got vs want`.
pub fn first_difference(net: &Net, got: &Heads, want: &Heads) -> Option<String> {
    for ((h, g), w) in net.heads.iter().zip(got).zip(want) {
        if let Some(i) = (0..g.len().max(w.len())).find(|&i| g.get(i) != w.get(i)) {
            let n = h.outputs();
            return Some(format!("{}[{}][{}]: {:?} vs the reference's {:?}", h.name, i / n, i % n, g.get(i), w.get(i)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;
    use crate::hw::board::{BOARDS_DIR, Board};
    use crate::hw::export::source;
    use crate::hw::reuse::Reuse;
    use crate::model::init::{InitOptions, init};
    use crate::model::{Precision, Preset};

    fn runtime() -> Option<Runtime> {
        crate::backend::opencl::tests::runtime()
    }

    fn model(sparsity: f64) -> Model {
        let opts = InitOptions {
            preset: Preset::Tiny,
            precision: Precision::Int8,
            seed: 11,
            sparsity,
            inputs: None,
            block: None,
        };
        init(&opts).unwrap().into_model().unwrap()
    }

    /// The generated kernel, weights baked in, equals the reference bit for bit: dense and pruned
    /// models, batches 1, 3 and 1000, uniform and per-layer reuse factors (the grouping must not
    /// change a bit).
    #[test]
    fn exported_kernels_are_bit_identical_to_the_reference() {
        let Some(rt) = runtime() else { return };
        let per_layer =
            Reuse { all: 2, layers: vec![("conv2".into(), 5), ("fc1".into(), 7), ("segment_logits".into(), 1)] };
        for (what, m) in [("dense", model(0.0)), ("pruned 60%", model(0.6))] {
            for reuse in [Reuse::uniform(1), Reuse::uniform(3), per_layer.clone()] {
                let net = Net::of(&m, &reuse).unwrap();
                let src = source(&m, &net);
                for rows in [1, 3, 1000] {
                    let batch = synthetic::customers(m.graph().inputs, rows, rows as u64);
                    let got = run(&rt, "ltvx_model.cl", Kernel::Source(&src), &m, &net, &batch).unwrap();
                    let want = reference(&m, &batch).unwrap();
                    assert_eq!(first_difference(&net, &got, &want), None, "{what}, {reuse:?}, {rows} customers");
                    assert!(got == want);
                }
            }
        }
    }

    /// The vendor branches of the macros parse too: the source with aoc's or the Makefile's v++
    /// define still builds on PoCL (their pragmas and attributes are ignored or honoured there) and
    /// still computes the reference's bits.
    #[test]
    fn vendor_branches_build_and_conform() {
        let Some(rt) = runtime() else { return };
        let m = model(0.5);
        let net = Net::of(&m, &Reuse::uniform(2)).unwrap();
        let batch = synthetic::customers(m.graph().inputs, 5, 2);
        for define in ["INTELFPGA_CL", "LTVX_XILINX"] {
            let src = format!("#define {define}\n{}", source(&m, &net));
            let got = run(&rt, define, Kernel::Source(&src), &m, &net, &batch).unwrap();
            assert!(got == reference(&m, &batch).unwrap(), "{define}");
        }
    }

    /// The streaming expansion is well-formed OpenCL C: with stand-in channel macros (constant
    /// arrays: PoCL has neither channels nor pipes, so nothing streams here) it builds on PoCL and
    /// holds every stage kernel and the hash kernel but not the single task. `LTVX_STREAM` without a
    /// channel mechanism stops at the source's `#error`. Whether aoc and v++ accept the real channels
    /// and pipes is not proven here (neither tool is installed).
    #[test]
    fn the_streaming_expansion_builds_with_stand_in_channels() {
        let Some(rt) = runtime() else { return };
        let m = model(0.4);
        let net = Net::of(&m, &Reuse { all: 2, layers: vec![("conv2".into(), 4)] }).unwrap();
        let stand_ins = "#define LTVX_CHANNEL(c, d) __constant uchar c[d] = {0}\n\
            #define LTVX_READ(c, v) v = c[0]\n#define LTVX_WRITE(c, v) (void)(c[0] + (v))\n";
        let src = format!("#define {STREAM}\n{stand_ins}{}", source(&m, &net));
        let program = rt.build("the streaming form", &[&src], "-cl-std=CL1.2").unwrap();
        for (i, st) in net.stages().iter().enumerate() {
            rt.kernel(&program, &st.kernel(i)).unwrap();
        }
        rt.kernel(&program, "ltvx_model_hash").unwrap();
        assert!(rt.kernel(&program, KERNEL).is_err(), "no single task in a streaming build");
        let bare = format!("#define {STREAM}\n{}", source(&m, &net));
        let e = rt.build("the streaming form", &[&bare], "-cl-std=CL1.2").unwrap_err();
        assert!(e.contains("LTVX_STREAM needs channels or pipes"), "{e}");
    }

    /// A pruned model's source holds fewer multiplies, and its estimate fewer DSPs.
    #[test]
    fn pruned_weights_emit_no_multiply() {
        let (dense, pruned) = (model(0.0), model(0.6));
        let multiplies = |m: &Model| source(m, &Net::of(m, &Reuse::uniform(1)).unwrap()).matches(" + (uint)(").count();
        let (d, p) = (multiplies(&dense), multiplies(&pruned));
        let nonzero = |m: &Model| Net::of(m, &Reuse::uniform(1)).unwrap().layers().map(|l| l.nonzero()).sum::<usize>();
        assert_eq!((d, p), (nonzero(&dense), nonzero(&pruned)));
        assert!(p * 2 < d, "{p} vs {d}");
        let board = Board::find("u55c", Path::new(BOARDS_DIR)).unwrap();
        let dsp = |m: &Model| crate::hw::estimate::Estimate::of(&Net::of(m, &Reuse::uniform(1)).unwrap(), &board).dsp;
        assert!(dsp(&pruned) < dsp(&dense));
    }

    /// A kernel exported for another model is refused by its hash.
    #[test]
    fn another_models_export_is_refused() {
        let Some(rt) = runtime() else { return };
        let (a, b) = (model(0.0), model(0.6));
        let src = source(&a, &Net::of(&a, &Reuse::uniform(1)).unwrap());
        let batch = synthetic::customers(b.graph().inputs, 2, 1);
        let e =
            run(&rt, "a.cl", Kernel::Source(&src), &b, &Net::of(&b, &Reuse::uniform(1)).unwrap(), &batch).unwrap_err();
        assert!(e.contains("compiled for model hash"), "{e}");
    }
}
