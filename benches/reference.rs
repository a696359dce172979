//! The reference backend's speed on value model v1 (the base preset): the floor every fast backend
//! is measured against. `cargo bench --bench reference`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ltvx::backend::{BackendChoice, BackendKind};
use ltvx::data::synthetic;
use ltvx::engine::Engine;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{Precision, Preset};

fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference/base");
    group.sample_size(10);
    for precision in [Precision::Fp32, Precision::Fp16, Precision::Int8] {
        let opts = InitOptions { preset: Preset::Base, precision, seed: 1, sparsity: 0.0, inputs: None, block: None };
        let model = init(&opts).unwrap().into_model().unwrap();
        let engine = Engine::build(&model, BackendChoice::Kind(BackendKind::Reference)).unwrap();
        for batch_size in [1usize, 64] {
            let batch = synthetic::customers(model.graph().inputs, batch_size, 2);
            group.throughput(Throughput::Elements(batch_size as u64));
            group.bench_with_input(BenchmarkId::new(precision.to_string(), batch_size), &batch, |b, batch| {
                b.iter(|| engine.score(batch).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, reference);
criterion_main!(benches);
