//! The backend conformance suite, written once and run for every backend this machine has: random
//! graphs and weights from many seeds, every op, odd sizes, dense and pruned weights, every
//! precision, checked against the reference — `==` on int8 fusion-boundary tensors and head
//! accumulators, the documented tolerance (|a − b| ≤ 1e-5 + 1e-4·|b|) on float outputs.
//!
//! A backend absent here is reported as "skipped: <reason>"; when `LTVX_REQUIRE` names it (e.g.
//! `LTVX_REQUIRE=opencl,cuda`) its absence fails the suite instead.

mod common;

use common::{Variant, model, random_graph};
use ltvx::backend::cpu::Isa;
use ltvx::backend::opencl::{KernelForm, Selection};
use ltvx::backend::{BackendChoice, BackendKind, Options, Trace};
use ltvx::data::synthetic;
use ltvx::engine::{Batch, Engine, HeadValues};
use ltvx::model::block_prune::BlockShape;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{Precision, Preset};
use std::io::Write;

use ltvx::{Error, Model};

fn required(kind: BackendKind) -> bool {
    std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|s| s.trim() == kind.to_string())
}

/// An engine on `kind` for `model`, or `None` after reporting why the backend is absent. The
/// report goes straight to stderr so that it shows even when the test passes.
fn engine(model: &Model, kind: BackendKind, options: &Options) -> Option<Engine> {
    match Engine::build_with(model, BackendChoice::Kind(kind), options) {
        Ok(e) => Some(e),
        Err(Error::Backend { reason, .. }) if !required(kind) => {
            let _ = writeln!(std::io::stderr(), "skipped: {kind} conformance: {reason}");
            None
        }
        Err(e) => panic!("backend {kind} is required (LTVX_REQUIRE) but cannot run: {e}"),
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 + 1e-4 * b.abs() || (a.is_infinite() && a == b)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(close(*a, *b), "{what}[{i}]: {a} vs reference {b}");
    }
}

/// The comparison the numerics contract defines: bit-identical for int8, tolerance for floats.
fn assert_conforms(ctx: &str, variant: Variant, got: &Trace, want: &Trace) {
    if variant.is_int8() {
        assert_eq!(got.boundaries.keys().collect::<Vec<_>>(), want.boundaries.keys().collect::<Vec<_>>(), "{ctx}");
        for (name, values) in &want.boundaries {
            assert!(got.boundaries[name] == *values, "{ctx}: u8 tensor {name} differs from the reference");
        }
    }
    for (head, (g, w)) in ["ltv", "churn", "segment"].iter().zip([
        (&got.heads.ltv, &want.heads.ltv),
        (&got.heads.churn, &want.heads.churn),
        (&got.heads.segment, &want.heads.segment),
    ]) {
        match (g, w) {
            (HeadValues::Accumulators(g), HeadValues::Accumulators(w)) => {
                assert!(g == w, "{ctx}: {head} accumulators differ")
            }
            (HeadValues::Logits(g), HeadValues::Logits(w)) => assert_close(&format!("{ctx}: {head} logits"), g, w),
            _ => panic!("{ctx}: {head} head has a different kind of output than the reference"),
        }
    }
}

/// The reference's trace, one customer at a time: the ground truth for any batch layout.
fn reference_rows(model: &Model, batch: &Batch) -> Vec<Trace> {
    let r = Engine::build(model, BackendChoice::Kind(BackendKind::Reference)).unwrap();
    (0..batch.len()).map(|i| r.trace(&batch.slice(i..i + 1)).unwrap()).collect()
}

/// Joins per-row traces in the order `rows` gives.
fn join(rows: &[Trace], order: &[usize]) -> Trace {
    let mut t = Trace { boundaries: Default::default(), heads: rows[0].heads.clone() };
    for v in [&mut t.heads.ltv, &mut t.heads.churn, &mut t.heads.segment] {
        match v {
            HeadValues::Logits(x) => x.clear(),
            HeadValues::Accumulators(x) => x.clear(),
        }
    }
    for &i in order {
        for (name, v) in &rows[i].boundaries {
            t.boundaries.entry(name.clone()).or_default().extend_from_slice(v);
        }
        for (dst, src) in [
            (&mut t.heads.ltv, &rows[i].heads.ltv),
            (&mut t.heads.churn, &rows[i].heads.churn),
            (&mut t.heads.segment, &rows[i].heads.segment),
        ] {
            match (dst, src) {
                (HeadValues::Logits(d), HeadValues::Logits(s)) => d.extend_from_slice(s),
                (HeadValues::Accumulators(d), HeadValues::Accumulators(s)) => d.extend_from_slice(s),
                _ => unreachable!(),
            }
        }
    }
    t
}

/// Checks `engine` on `model` for `batch`: the whole batch, a reversed row order, and the batch cut
/// into uneven pieces, each against the reference's per-customer results.
fn check(ctx: &str, engine: &Engine, model: &Model, variant: Variant, batch: &Batch) {
    let rows = reference_rows(model, batch);
    let n = batch.len();
    let identity: Vec<usize> = (0..n).collect();
    let reversed: Vec<usize> = (0..n).rev().collect();
    let mut reversed_batch = Batch::with_capacity(batch.sizes, n);
    for &i in &reversed {
        reversed_batch.push(batch.seq_row(i), batch.stat_row(i)).unwrap();
    }
    let ctx = format!("{ctx} on {}", engine.backend());
    assert_conforms(&format!("{ctx}, batch {n}"), variant, &engine.trace(batch).unwrap(), &join(&rows, &identity));
    assert_conforms(
        &format!("{ctx}, reversed"),
        variant,
        &engine.trace(&reversed_batch).unwrap(),
        &join(&rows, &reversed),
    );
    let mut start = 0;
    for len in [1usize, 2, 5, 16].iter().cycle().take(7) {
        let end = (start + len).min(n);
        let piece: Vec<usize> = (start..end).collect();
        if piece.is_empty() {
            break;
        }
        let got = engine.trace(&batch.slice(start..end)).unwrap();
        assert_conforms(&format!("{ctx}, rows {start}..{end}"), variant, &got, &join(&rows, &piece));
        start = end;
    }
    assert_eq!(engine.score(batch).unwrap().len(), n, "{ctx}: one score per customer");
}

/// Every case of the suite on one backend.
fn conformance(kind: BackendKind) {
    conformance_with(kind, &Options::default());
}

fn conformance_with(kind: BackendKind, options: &Options) {
    conformance_of(kind, options, &Variant::ALL);
}

/// The suite's cases of the given variants (a kernel family for some precisions only).
fn conformance_of(kind: BackendKind, options: &Options, variants: &[Variant]) {
    let probe_model = model(Preset::Tiny.graph(Preset::Tiny.default_inputs()), Variant::Int8, 1, 0.0);
    if engine(&probe_model, kind, options).is_none() {
        return;
    }
    let run = |ctx: String, m: Model, variant: Variant, batch: Batch| {
        if !variants.contains(&variant) {
            return;
        }
        let e = engine(&m, kind, options).unwrap_or_else(|| panic!("{ctx}: {kind} declined a model it should run"));
        check(&format!("{ctx} ({})", e.describe()), &e, &m, variant, &batch);
    };
    // Random graphs, every precision, dense and pruned, batches of 1, 3 and 17.
    for seed in 0..24u64 {
        let graph = random_graph(seed);
        let variant = Variant::ALL[seed as usize % 4];
        let sparsity = if seed % 3 == 0 { 0.5 } else { 0.0 };
        let batch = synthetic::customers(graph.inputs, [1, 3, 17][seed as usize % 3], seed + 100);
        run(
            format!("seed {seed} {variant:?} sparsity {sparsity}"),
            model(graph, variant, seed, sparsity),
            variant,
            batch,
        );
    }
    // Large batches on small graphs.
    for (seed, n) in [(101u64, 1000usize), (102, 4097)] {
        let graph = random_graph(seed);
        for variant in [Variant::Fp32, Variant::Int8] {
            let batch = synthetic::customers(graph.inputs, n, seed);
            run(format!("seed {seed} {variant:?}"), model(graph.clone(), variant, seed, 0.0), variant, batch);
        }
    }
    // Block-sparse models at batches that leave partial tiles: 16×4 blocks (one-strip sparse tiles)
    // and 32×4 (two strips sharing their groups, on VNNI); 32×32, the blocks the CUDA tensor-core
    // kernel skips.
    for (preset, precision, n, (rows, cols)) in [
        (Preset::Base, Precision::Int8, 53, (16, 4)),
        (Preset::Tiny, Precision::Int8, 130, (16, 4)),
        (Preset::Base, Precision::Fp32, 17, (16, 4)),
        (Preset::Base, Precision::Int8, 29, (32, 4)),
        (Preset::Tiny, Precision::Int8, 67, (32, 4)),
        (Preset::Base, Precision::Int8, 37, (32, 32)),
    ] {
        let opts = InitOptions {
            preset,
            precision,
            seed: 3,
            sparsity: 0.75,
            inputs: None,
            block: Some(BlockShape { rows, cols }),
        };
        let m = init(&opts).unwrap().into_model().unwrap();
        let variant = if precision == Precision::Int8 { Variant::Int8 } else { Variant::Fp32 };
        let batch = synthetic::customers(m.graph().inputs, n, 9);
        run(format!("{preset} 75% block-sparse ({rows}x{cols}) {precision}"), m, variant, batch);
    }
    // A long sequence: the base preset's second convolution (32 channels x 7300 steps) no longer fits
    // the CUDA tensor-core kernel's shared memory (227 KiB even opted in) and runs on dp4a between
    // two tiled layers.
    let long = ltvx::model::graph::InputSizes { seq_channels: 4, seq_len: 7300, static_features: 8 };
    let graph = Preset::Base.graph(long);
    let batch = synthetic::customers(graph.inputs, 3, 12);
    run("base, 7300 steps, Int8".into(), model(graph, Variant::Int8, 5, 0.0), Variant::Int8, batch);
    // The base preset (value model v1) in every precision.
    let graph = Preset::Base.graph(Preset::Base.default_inputs());
    for variant in Variant::ALL {
        let batch = synthetic::customers(graph.inputs, 17, 8);
        run(format!("base {variant:?}"), model(graph.clone(), variant, 7, 0.0), variant, batch);
    }
}

#[test]
fn reference_conforms() {
    conformance(BackendKind::Reference);
}

/// Every kernel family this machine has, forced one by one, on one thread and on two.
#[test]
fn cpu_conforms_on_every_isa_and_thread_count() {
    for isa in Isa::ALL {
        if let Err(reason) = isa.require() {
            let _ = writeln!(std::io::stderr(), "skipped: cpu conformance on {isa}: {reason}");
            continue;
        }
        for threads in [1, 2] {
            conformance_with(BackendKind::Cpu, &Options { threads, cpu_isa: Some(isa), ..Options::default() });
        }
    }
}

#[test]
fn cuda_conforms() {
    conformance(BackendKind::Cuda);
}

/// The CUDA backend's plan and kernels in the host emulation (kernels/cuda/emulation.hpp), on every
/// machine: the tensor-core kernels (sm_90) and the dp4a ones (sm_75), each through the whole suite.
/// The emulation needs only a C++ compiler; without one the test reports skipped (fails when
/// `LTVX_REQUIRE` names `cuda-emulation`, as in CI).
#[test]
fn cuda_emulated_conforms() {
    if let Err(reason) = ltvx::backend::cuda::emulator::available() {
        let required =
            std::env::var("LTVX_REQUIRE").unwrap_or_default().split(',').any(|s| s.trim() == "cuda-emulation");
        assert!(!required, "the CUDA emulation is required (LTVX_REQUIRE) but cannot run: {reason}");
        let _ = writeln!(std::io::stderr(), "skipped: cuda emulated conformance: {reason}");
        return;
    }
    for arch in ltvx::backend::cuda::emulator::ARCHS {
        conformance_with(BackendKind::Cuda, &Options { cuda_emulation: Some(arch.into()), ..Options::default() });
    }
}

#[test]
fn opencl_conforms() {
    conformance(BackendKind::Opencl);
}

/// The single-work-item form of the OpenCL int8 kernels (the FPGA form, hw/fpga/int8_swi.cl) on
/// every int8 case of the suite.
#[test]
fn opencl_single_work_item_conforms() {
    let opencl = Selection { form: KernelForm::SingleWorkItem, ..Selection::default() };
    conformance_of(
        BackendKind::Opencl,
        &Options { opencl, ..Options::default() },
        &[Variant::Int8, Variant::Int8F32Heads],
    );
}

/// The kernel `ltvx hw export` generates (int8 weights baked in as literals, zero weights left out)
/// run on the OpenCL device against the reference: dense and pruned tiny models, batches 1, 3, 1000,
/// a uniform and a per-layer reuse factor.
#[test]
fn opencl_hw_export_conforms() {
    use ltvx::backend::opencl::runtime::Runtime;
    use ltvx::hw::{export, net::Net, reuse::Reuse, verify};
    let rt = match Selection::default().pick().and_then(Runtime::open) {
        Ok(rt) => rt,
        Err(reason) if !required(BackendKind::Opencl) => {
            let _ = writeln!(std::io::stderr(), "skipped: opencl hw export conformance: {reason}");
            return;
        }
        Err(reason) => panic!("backend opencl is required (LTVX_REQUIRE) but cannot run: {reason}"),
    };
    for sparsity in [0.0, 0.7] {
        let opts = InitOptions {
            preset: Preset::Tiny,
            precision: Precision::Int8,
            seed: 23,
            sparsity,
            inputs: None,
            block: None,
        };
        let m = init(&opts).unwrap().into_model().unwrap();
        let per_layer = Reuse { all: 2, layers: vec![("conv1".into(), 3), ("fc1".into(), 16)] };
        for reuse in [Reuse::uniform(2), per_layer] {
            let net = Net::of(&m, &reuse).unwrap();
            let src = export::source(&m, &net);
            for rows in [1, 3, 1000] {
                let batch = synthetic::customers(m.graph().inputs, rows, 7);
                let kernel = verify::Kernel::Source(&src);
                let got = verify::run(&rt, export::SOURCE_FILE, kernel, &m, &net, &batch).unwrap();
                let want = verify::reference(&m, &batch).unwrap();
                let diff = verify::first_difference(&net, &got, &want);
                assert_eq!(diff, None, "sparsity {sparsity}, {reuse:?}, {rows} customers");
            }
        }
    }
}
