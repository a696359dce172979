//! Property tests: the int8 pipeline stays within a stated bound of fp32 on the same weights, and
//! any backend's scores do not depend on batch size or row order.

mod common;

use common::{Variant, model, random_graph};
use ltvx::data::synthetic;
use ltvx::engine::{Engine, Scores};
use ltvx::model::Preset;
use proptest::prelude::*;

fn scores(m: &ltvx::Model, batch: &ltvx::Batch) -> Scores {
    Engine::build(m, "reference".parse().unwrap()).unwrap().score(batch).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The stated bounds (docs/NUMERICS.md): on a calibrated, randomly initialised model, int8 and fp32
/// probabilities differ by at most this much for customers drawn like the calibration set. Random
/// graphs have layers as narrow as one channel, where 8 bits are coarse (worst of 400 graphs: 0.28);
/// the presets are far tighter.
const INT8_BOUND_RANDOM_GRAPHS: f32 = 0.35;
const INT8_BOUND_PRESETS: f32 = 0.05;

fn int8_vs_fp32(graph: ltvx::model::Graph, seed: u64) -> (f32, f32, f32) {
    let fp32 = model(graph.clone(), Variant::Fp32, seed, 0.0);
    let int8 = model(graph.clone(), Variant::Int8, seed, 0.0);
    let batch = synthetic::customers(graph.inputs, 64, seed ^ 0xabc);
    let (f, q) = (scores(&fp32, &batch), scores(&int8, &batch));
    (
        max_diff(&q.churn_probability, &f.churn_probability),
        max_diff(&q.p_purchase, &f.p_purchase),
        max_diff(&q.p_segment, &f.p_segment),
    )
}

proptest! {
    // A fixed seed: the suite must not pass or fail by the luck of the draw.
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn int8_stays_close_to_fp32(seed in 0u64..10_000) {
        let (churn, purchase, segment) = int8_vs_fp32(random_graph(seed), seed);
        prop_assert!(churn <= INT8_BOUND_RANDOM_GRAPHS, "churn probability differs by {churn}");
        prop_assert!(purchase <= INT8_BOUND_RANDOM_GRAPHS, "p_purchase differs by {purchase}");
        prop_assert!(segment <= INT8_BOUND_RANDOM_GRAPHS, "segment probability differs by {segment}");
    }

    #[test]
    fn scores_ignore_batch_layout(seed in 0u64..10_000, n in 1usize..40, cut in 0usize..40) {
        let graph = random_graph(seed);
        let m = model(graph.clone(), Variant::ALL[seed as usize % 4], seed, 0.0);
        let batch = synthetic::customers(graph.inputs, n, seed);
        let whole = scores(&m, &batch);
        let cut = cut % n;
        let (a, b) = (scores(&m, &batch.slice(0..cut)), scores(&m, &batch.slice(cut..n)));
        let joined: Vec<f32> = a.ltv.iter().chain(&b.ltv).copied().collect();
        prop_assert_eq!(joined, whole.ltv);
        let rev: Vec<usize> = (0..n).rev().collect();
        let mut reversed = ltvx::Batch::new(graph.inputs);
        for &i in &rev { reversed.push(batch.seq_row(i), batch.stat_row(i)).unwrap(); }
        let r = scores(&m, &reversed);
        prop_assert_eq!(rev.iter().map(|&i| whole.churn_probability[i]).collect::<Vec<_>>(), r.churn_probability);
    }
}

#[test]
fn int8_presets_stay_close_to_fp32() {
    for preset in [Preset::Tiny, Preset::Base] {
        for seed in [1, 2, 3] {
            let (churn, purchase, segment) = int8_vs_fp32(preset.graph(preset.default_inputs()), seed);
            let worst = churn.max(purchase).max(segment);
            assert!(worst <= INT8_BOUND_PRESETS, "{preset} seed {seed}: {churn} {purchase} {segment}");
        }
    }
}
