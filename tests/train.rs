//! The trainer end to end: it learns a learnable task, is deterministic, stops early at the best
//! epoch, keeps pruned weights at zero, and turns bad input into `Error::Input`. (Gradient checks of
//! every op and loss are unit tests in src/train/.)

use ltvx::data::synthetic;
use ltvx::model::Precision;
use ltvx::model::graph::{Graph, HeadKind, InputSizes};
use ltvx::model::init::{prune_by_magnitude, random_model};
use ltvx::model::preset::{Preset, SEGMENTS};
use ltvx::model::tensor::{Tensor, TensorData, Weights};
use ltvx::rng::Rng;
use ltvx::train::{Losses, Targets, TrainData, TrainOptions, evaluate, masks_of_zero_weights, train};
use ltvx::{Batch, Error};

const SIZES: InputSizes = InputSizes { seq_channels: 4, seq_len: 52, static_features: 32 };

/// Synthetic customers with labels that are a simple function of their inputs, so that a model can
/// learn them: activity a = mean weekly log1p(orders) (channel 0), value v = mean weekly
/// log1p(spend) (channel 1) plus half the first static feature. Customers in the bottom 30 % of
/// activity spend nothing; the others spend exp(1.5·v) with lognormal noise (σ = 0.3). Churned = below
/// the median activity; segment = quintile of v.
fn task(n: usize, seed: u64) -> TrainData {
    let inputs = synthetic::customers(SIZES, n, seed);
    let t = SIZES.seq_len;
    let mean = |row: &[f32], channel: usize| row[channel * t..(channel + 1) * t].iter().sum::<f32>() / t as f32;
    let activity: Vec<f32> = (0..n).map(|i| mean(inputs.seq_row(i), 0)).collect();
    let value: Vec<f32> = (0..n).map(|i| mean(inputs.seq_row(i), 1) + 0.5 * inputs.stat_row(i)[0]).collect();
    let quantile = |v: &[f32], q: f64| {
        let mut s = v.to_vec();
        s.sort_by(f32::total_cmp);
        s[((s.len() - 1) as f64 * q) as usize]
    };
    let (buys, median) = (quantile(&activity, 0.3), quantile(&activity, 0.5));
    let bins: Vec<f32> = (1..SEGMENTS).map(|k| quantile(&value, k as f64 / SEGMENTS as f64)).collect();
    let mut rng = Rng::derive(seed, "task-noise");
    let targets = Targets {
        spend: (0..n)
            .map(|i| if activity[i] > buys { (1.5 * value[i] as f64 + 0.3 * rng.normal()).exp() as f32 } else { 0.0 })
            .collect(),
        churned: activity.iter().map(|&a| (a < median) as u8 as f32).collect(),
        segment: value.iter().map(|&v| bins.iter().filter(|&&b| v > b).count() as u32).collect(),
        soft: None,
    };
    TrainData { inputs, targets }
}

fn model(preset: Preset, seed: u64) -> (Graph, Weights) {
    let file = random_model(preset.graph(SIZES), Precision::Fp32, seed, 0.0).unwrap();
    (file.meta.graph, file.weights)
}

fn options(epochs: usize, seed: u64) -> TrainOptions {
    TrainOptions { epochs, seed, threads: 2, ..TrainOptions::default() }
}

/// The best constant predictor fitted on `data`: every weight zero, the heads' biases at the
/// maximum-likelihood constants (purchase rate, mean and spread of log spend, churn rate, class
/// frequencies).
fn constant_predictor(graph: &Graph, like: &Weights, data: &TrainData) -> Weights {
    let t = &data.targets;
    let n = t.spend.len() as f64;
    let logs: Vec<f64> = t.spend.iter().filter(|&&s| s > 0.0).map(|&s| (s as f64).ln()).collect();
    let p = logs.len() as f64 / n;
    let mu = logs.iter().sum::<f64>() / logs.len() as f64;
    let sigma = (logs.iter().map(|l| (l - mu).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
    let churn = t.churned.iter().map(|&c| c as f64).sum::<f64>() / n;
    let logit = |q: f64| (q / (1.0 - q)).ln();
    let segment: Vec<f64> = (0..SEGMENTS as u32)
        .map(|k| (t.segment.iter().filter(|&&s| s == k).count() as f64 / n).max(1e-9).ln())
        .collect();
    let mut w: Weights = like
        .iter()
        .map(|(name, tensor)| (name.clone(), Tensor::f32(tensor.shape.clone(), vec![0.0; tensor.len()])))
        .collect();
    let heads = [
        (HeadKind::Ltv, vec![logit(p), mu, sigma + (-(-sigma).exp_m1()).ln()]),
        (HeadKind::Churn, vec![logit(churn)]),
        (HeadKind::Segment, segment),
    ];
    for (head, bias) in heads {
        let name = format!("{}.bias", graph.head_dense(head).name);
        w.insert(name, Tensor::f32(vec![bias.len()], bias.iter().map(|&b| b as f32).collect()));
    }
    w
}

fn f32s(w: &Weights, name: &str) -> Vec<f32> {
    match &w[name].data {
        TensorData::F32(v) => v.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn learns_a_learnable_task_and_beats_a_constant_predictor() {
    let (graph, init) = model(Preset::Tiny, 1);
    let (data, test) = (task(2000, 1), task(600, 2));
    let opts = options(100, 1);
    let outcome = train(&graph, &init, &data, &opts, &mut |_| {}).unwrap();
    let trained = evaluate(&graph, &outcome.weights, &test, &opts).unwrap();
    let initial = evaluate(&graph, &init, &test, &opts).unwrap();
    let constant = evaluate(&graph, &constant_predictor(&graph, &init, &data), &test, &opts).unwrap();
    let report =
        |l: &Losses| format!("total {:.3} (ltv {:.3}, churn {:.3}, segment {:.3})", l.total, l.ltv, l.churn, l.segment);
    let summary = format!(
        "initial {}\nconstant {}\ntrained {} after {} epochs, best {}",
        report(&initial),
        report(&constant),
        report(&trained),
        outcome.history.len(),
        outcome.best_epoch
    );
    println!("{summary}");
    assert!(trained.total < 0.5 * initial.total, "{summary}");
    for (t, c, head) in [
        (trained.ltv, constant.ltv, "ltv"),
        (trained.churn, constant.churn, "churn"),
        (trained.segment, constant.segment, "segment"),
    ] {
        assert!(t < 0.8 * c, "{head} head does not beat the constant predictor:\n{summary}");
    }
}

#[test]
fn same_seed_and_threads_give_identical_weights() {
    let (graph, init) = model(Preset::Tiny, 3);
    let data = task(400, 3);
    let opts = TrainOptions { batch_size: 64, ..options(3, 3) };
    let a = train(&graph, &init, &data, &opts, &mut |_| {}).unwrap();
    let b = train(&graph, &init, &data, &opts, &mut |_| {}).unwrap();
    assert_eq!(a.weights, b.weights, "bit-identical weights");
    let strip =
        |o: &ltvx::train::TrainOutcome| o.history.iter().map(|e| (e.train_loss, e.validation)).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b));
    let other_seed = train(&graph, &init, &data, &TrainOptions { seed: 4, ..opts.clone() }, &mut |_| {}).unwrap();
    assert_ne!(a.weights, other_seed.weights, "the seed picks the split and the shuffles");
    // Another thread count cuts mini-batches differently: the same numbers up to rounding.
    let one = evaluate(&graph, &a.weights, &data, &TrainOptions { threads: 1, ..opts.clone() }).unwrap();
    let three = evaluate(&graph, &a.weights, &data, &TrainOptions { threads: 3, ..opts.clone() }).unwrap();
    assert!((one.total - three.total).abs() <= 1e-6 * one.total.abs(), "{one:?} vs {three:?}");
}

#[test]
fn early_stopping_returns_the_best_epoch() {
    // Few customers and a high learning rate: the validation loss turns up after a few epochs.
    let (graph, init) = model(Preset::Tiny, 5);
    let data = task(160, 5);
    let opts = TrainOptions { batch_size: 16, learning_rate: 1e-2, patience: 3, ..options(200, 5) };
    let mut seen = Vec::new();
    let outcome = train(&graph, &init, &data, &opts, &mut |e| seen.push(e.epoch)).unwrap();
    let h = &outcome.history;
    assert!(h.len() < 200, "did not stop early");
    assert_eq!(seen, (1..=h.len()).collect::<Vec<_>>(), "progress after every epoch");
    assert_eq!(h.len(), outcome.best_epoch + opts.patience, "stops `patience` epochs after the best");
    let best = &h[outcome.best_epoch - 1].validation;
    assert!(h.iter().all(|e| e.validation.total >= best.total));
    // The returned weights are that epoch's: evaluating them on the same validation slice agrees.
    let (_, validation) = data.split(opts.validation_fraction, opts.seed).unwrap();
    let again = evaluate(&graph, &outcome.weights, &validation, &opts).unwrap();
    assert!((again.total - best.total).abs() <= 1e-9 * best.total.abs(), "{again:?} vs {best:?}");
}

#[test]
fn pruned_weights_stay_zero() {
    let (graph, mut init) = model(Preset::Tiny, 6);
    for (name, tensor) in init.iter_mut().filter(|(n, _)| n.ends_with(".weight")) {
        let TensorData::F32(v) = &mut tensor.data else { panic!("{name}") };
        prune_by_magnitude(v, 0.5);
    }
    let opts = TrainOptions { masks: masks_of_zero_weights(&init), ..options(2, 6) };
    let outcome = train(&graph, &init, &task(300, 6), &opts, &mut |_| {}).unwrap();
    for (name, mask) in &opts.masks {
        let (before, after) = (f32s(&init, name), f32s(&outcome.weights, name));
        for ((&keep, b), a) in mask.iter().zip(&before).zip(&after) {
            assert!(keep || *a == 0.0, "{name}: a pruned weight moved to {a}");
            assert!(!keep || b != a, "{name}: a kept weight did not train");
        }
    }
}

#[test]
fn bad_input_is_an_input_error() {
    let (graph, init) = model(Preset::Tiny, 7);
    let good = task(50, 7);
    let opts = options(1, 7);
    let with = |edit: &dyn Fn(&mut TrainData)| {
        let mut d = good.clone();
        edit(&mut d);
        d
    };
    let cases: Vec<(&str, TrainData, TrainOptions, Weights)> = vec![
        ("short spend", with(&|d| d.targets.spend.truncate(49)), opts.clone(), init.clone()),
        ("long churned", with(&|d| d.targets.churned.push(0.0)), opts.clone(), init.clone()),
        ("short segment", with(&|d| d.targets.segment.truncate(3)), opts.clone(), init.clone()),
        ("segment = K", with(&|d| d.targets.segment[4] = SEGMENTS as u32), opts.clone(), init.clone()),
        ("negative spend", with(&|d| d.targets.spend[0] = -1.0), opts.clone(), init.clone()),
        ("NaN spend", with(&|d| d.targets.spend[1] = f32::NAN), opts.clone(), init.clone()),
        ("infinite spend", with(&|d| d.targets.spend[2] = f32::INFINITY), opts.clone(), init.clone()),
        ("churn label 2", with(&|d| d.targets.churned[0] = 2.0), opts.clone(), init.clone()),
        (
            "other input sizes",
            TrainData {
                inputs: synthetic::customers(InputSizes { seq_len: 20, ..SIZES }, 50, 1),
                targets: good.targets.clone(),
            },
            opts.clone(),
            init.clone(),
        ),
        (
            "one customer",
            TrainData {
                inputs: good.inputs.slice(0..1),
                targets: Targets { spend: vec![1.0], churned: vec![0.0], segment: vec![0], soft: None },
            },
            opts.clone(),
            init.clone(),
        ),
        (
            "no customers",
            TrainData { inputs: Batch::new(SIZES), targets: Targets::default() },
            opts.clone(),
            init.clone(),
        ),
        ("0 epochs", good.clone(), TrainOptions { epochs: 0, ..opts.clone() }, init.clone()),
        ("0 batch", good.clone(), TrainOptions { batch_size: 0, ..opts.clone() }, init.clone()),
        ("0 threads", good.clone(), TrainOptions { threads: 0, ..opts.clone() }, init.clone()),
        ("0 patience", good.clone(), TrainOptions { patience: 0, ..opts.clone() }, init.clone()),
        ("NaN learning rate", good.clone(), TrainOptions { learning_rate: f64::NAN, ..opts.clone() }, init.clone()),
        ("negative decay", good.clone(), TrainOptions { weight_decay: -1.0, ..opts.clone() }, init.clone()),
        ("validation 0", good.clone(), TrainOptions { validation_fraction: 0.0, ..opts.clone() }, init.clone()),
        ("validation 1", good.clone(), TrainOptions { validation_fraction: 1.0, ..opts.clone() }, init.clone()),
        (
            "zero loss weights",
            good.clone(),
            TrainOptions {
                loss_weights: ltvx::train::LossWeights { ltv: 0.0, churn: 0.0, segment: 0.0 },
                ..opts.clone()
            },
            init.clone(),
        ),
        (
            "mask of an unknown tensor",
            good.clone(),
            TrainOptions { masks: [("nope.weight".to_string(), vec![true])].into(), ..opts.clone() },
            init.clone(),
        ),
        (
            "mask of the wrong length",
            good.clone(),
            TrainOptions { masks: [("fc1.weight".to_string(), vec![true])].into(), ..opts.clone() },
            init.clone(),
        ),
        ("missing tensor", good.clone(), opts.clone(), {
            let mut w = init.clone();
            w.remove("fc1.bias");
            w
        }),
        ("wrong shape", good.clone(), opts.clone(), {
            let mut w = init.clone();
            w.insert("fc1.bias".into(), Tensor::f32(vec![2], vec![0.0; 2]));
            w
        }),
        ("int8 tensor", good.clone(), opts.clone(), {
            let mut w = init.clone();
            w.insert("fc1.bias".into(), Tensor { shape: vec![32], data: TensorData::I8(vec![0; 32]) });
            w
        }),
        ("non-finite weight", good.clone(), opts.clone(), {
            let mut w = init.clone();
            w.insert("fc1.bias".into(), Tensor::f32(vec![32], vec![f32::NAN; 32]));
            w
        }),
    ];
    for (what, data, opts, weights) in cases {
        match train(&graph, &weights, &data, &opts, &mut |_| {}) {
            Err(Error::Input(msg)) => println!("{what}: {msg}"),
            other => panic!("{what}: expected an input error, got {:?}", other.map(|o| o.best_epoch)),
        }
    }
    assert!(matches!(evaluate(&graph, &init, &with(&|d| d.targets.segment[0] = 99), &opts), Err(Error::Input(_))));
}

#[test]
fn a_diverging_run_is_an_error_not_a_panic() {
    let (graph, init) = model(Preset::Tiny, 8);
    let opts = TrainOptions { learning_rate: 1e30, ..options(3, 8) };
    match train(&graph, &init, &task(100, 8), &opts, &mut |_| {}) {
        Err(Error::Input(msg)) => assert!(msg.contains("diverged"), "{msg}"),
        other => panic!("expected divergence to be reported, got {:?}", other.map(|o| o.history)),
    }
}

/// The measurement the trainer's defaults are sized by: the base preset on 11,800 customers. Run with
/// `cargo test --release --test train -- --ignored --nocapture base_preset_timing`
/// (`LTVX_TRAIN_THREADS` picks the thread count, default 2).
#[test]
#[ignore = "a timing run (10–30 s in release), not a check"]
fn base_preset_timing() {
    let threads = std::env::var("LTVX_TRAIN_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let (graph, init) = model(Preset::Base, 1);
    let data = task(11_800, 1);
    let opts = TrainOptions { threads, ..TrainOptions::default() };
    let started = std::time::Instant::now();
    let outcome = train(&graph, &init, &data, &opts, &mut |e| {
        println!(
            "epoch {:>2}: train {:.4}  validation {:.4} (ltv {:.4}, churn {:.4}, segment {:.4})  {:.2} s",
            e.epoch,
            e.train_loss,
            e.validation.total,
            e.validation.ltv,
            e.validation.churn,
            e.validation.segment,
            e.seconds
        )
    })
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let per_epoch = outcome.history.iter().map(|e| e.seconds).sum::<f64>() / outcome.history.len() as f64;
    println!(
        "base, 11,800 customers, {threads} threads: {} epochs (best {}), {seconds:.1} s in all, {per_epoch:.2} s per epoch; initial validation {:.4}",
        outcome.history.len(),
        outcome.best_epoch,
        outcome.initial_validation.total
    );
}
