//! The CPU backend at value model v1's shapes (the base preset): every fused kernel × instruction-set
//! family × precision, then the whole engine per family. `cargo bench --bench cpu -- --quick`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ltvx::backend::cpu::{Isa, kernel_calls};
use ltvx::backend::{BackendChoice, BackendKind, Options};
use ltvx::data::synthetic;
use ltvx::engine::Engine;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{Model, Precision, Preset};

fn base(precision: Precision) -> Model {
    let opts = InitOptions { preset: Preset::Base, precision, seed: 1, sparsity: 0.0, inputs: None, block: None };
    init(&opts).unwrap().into_model().unwrap()
}

/// Throughput in multiply-adds: criterion reports them as "elements/s".
fn kernels(c: &mut Criterion) {
    for precision in [Precision::Int8, Precision::Fp16, Precision::Fp32] {
        let model = base(precision);
        let mut group = c.benchmark_group(format!("kernel/{precision}"));
        for isa in Isa::available_all() {
            for (layer, macs, mut call) in kernel_calls(&model, isa).unwrap() {
                group.throughput(Throughput::Elements(macs));
                group.bench_function(BenchmarkId::new(layer, isa), |b| b.iter(&mut call));
            }
        }
        group.finish();
    }
}

/// Customers per second, one thread, f32 inputs to scores.
fn engine(c: &mut Criterion) {
    for precision in [Precision::Int8, Precision::Fp32] {
        let model = base(precision);
        let mut group = c.benchmark_group(format!("engine/{precision}"));
        for isa in Isa::available_all() {
            let options = Options { threads: 1, cpu_isa: Some(isa), ..Options::default() };
            let engine = Engine::build_with(&model, BackendChoice::Kind(BackendKind::Cpu), &options).unwrap();
            for n in [1usize, 256, 4096] {
                let batch = synthetic::customers(model.graph().inputs, n, 2);
                group.throughput(Throughput::Elements(n as u64));
                group.bench_with_input(BenchmarkId::new(isa.to_string(), n), &batch, |b, batch| {
                    b.iter(|| engine.score(batch).unwrap())
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, kernels, engine);
criterion_main!(benches);
