//! What the scoring server spends per 64-customer request besides inference: reading a JSON body,
//! writing the JSON answer, reading a binary body. Two kinds of JSON body: synthetic customers (most
//! weeks without a purchase, as in real logs) and the load generator's dense random values (every
//! number 8–9 digits, the worst case). `cargo bench --bench serve -- --quick`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ltvx::engine::Scores;
use ltvx::model::Preset;
use ltvx::rng::Rng;
use ltvx::serve::loadgen::{Values, random_batch};
use ltvx::serve::{api, binary};

const CUSTOMERS: usize = 64;

fn requests(c: &mut Criterion) {
    let sizes = Preset::Base.default_inputs();
    let ids: Vec<String> = (0..CUSTOMERS).map(|i| format!("customer-{i:05}")).collect();
    let mut group = c.benchmark_group("serve/request");
    group.throughput(Throughput::Elements(CUSTOMERS as u64));
    for (kind, values) in [("synthetic", Values::Realistic), ("dense", Values::Dense)] {
        let batch = random_batch(sizes, CUSTOMERS, values, &mut Rng::new(7));
        let body = api::request_json(&ids, &batch);
        eprintln!("{kind} JSON request: {} bytes for {CUSTOMERS} customers", body.len());
        let no_spec = Err("not needed".to_string());
        group.bench_with_input(BenchmarkId::new("json", kind), &body, |b, body| {
            b.iter(|| api::parse(body.as_bytes(), sizes, &no_spec).ok().unwrap())
        });
        let packed = binary::encode_request(&batch);
        group.bench_with_input(BenchmarkId::new("binary", kind), &packed, |b, packed| {
            b.iter(|| binary::decode_request(packed, sizes).unwrap())
        });
    }
    group.finish();
}

fn responses(c: &mut Criterion) {
    let mut rng = Rng::new(9);
    let segments = 4;
    let mut scores = Scores { segments, ..Default::default() };
    for _ in 0..CUSTOMERS {
        scores.ltv.push((rng.normal() * 2.0).exp() as f32 * 50.0);
        scores.p_purchase.push(rng.uniform() as f32);
        scores.churn_probability.push(rng.uniform() as f32);
        scores.segment.push(rng.below(segments) as u32);
        scores.p_segment.extend((0..segments).map(|_| rng.uniform() as f32));
    }
    let ids: Vec<String> = (0..CUSTOMERS).map(|i| format!("customer-{i:05}")).collect();
    let model = serde_json::json!({"name": "ltvx-base", "version": 1, "hash": "ef0481ef5d072178"});
    let mut group = c.benchmark_group("serve/response");
    group.throughput(Throughput::Elements(CUSTOMERS as u64));
    group.bench_function("json", |b| b.iter(|| api::response(&model, &ids, &scores)));
    group.bench_function("binary", |b| b.iter(|| binary::encode_response(&scores)));
    group.finish();
}

criterion_group!(benches, requests, responses);
criterion_main!(benches);
