//! `ltvx demo`: the whole path on one machine with nothing but this repository — create a value
//! model, write a feature file of customers, score them, and show who is worth most.
//!
//! Until the training pipeline lands, the model has random weights (`init`) and the customers are
//! synthetic; the scores therefore show the machinery, not real predictions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ltvx::backend::BackendChoice;
use ltvx::data::{features, synthetic};
use ltvx::engine::Engine;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{Precision, Preset};
use ltvx::{Model, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Where the model, features and scores are written.
    #[arg(long, default_value = "ltvx-demo")]
    dir: PathBuf,
    /// Synthetic customers to score.
    #[arg(long, default_value_t = 5_000)]
    customers: usize,
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(a: Args) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.dir).map_err(|e| ltvx::Error::io(&a.dir, e))?;
    let model_path = a.dir.join("value-model-int8.ltvx");
    let opts = InitOptions { preset: Preset::Base, precision: Precision::Int8, seed: 1, sparsity: 0.0, inputs: None };
    init(&opts)?.save(&model_path)?;
    let model = Model::open(&model_path)?;
    println!(
        "1. model     {} — base preset (value model v1), int8, {} MACs per customer",
        model_path.display(),
        model.macs()
    );

    let sizes = model.graph().inputs;
    let batch = synthetic::customers(sizes, a.customers, 2);
    let features_path = a.dir.join("customers.jsonl");
    ltvx::atomic_file::write(&features_path, |w| {
        (0..batch.len()).try_for_each(|i| {
            features::write_line(w, &format!("C{i:06}"), batch.seq_row(i), batch.stat_row(i), sizes.seq_len)
        })
    })?;
    println!(
        "2. features  {} — {} synthetic customers, seq [{}×{}] + static [{}]",
        features_path.display(),
        batch.len(),
        sizes.seq_channels,
        sizes.seq_len,
        sizes.static_features
    );

    super::check_interrupt()?;
    let engine = Engine::build(&model, a.backend)?;
    let start = Instant::now();
    let scores = engine.score(&batch)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "3. scored    {} customers on {} in {secs:.2} s ({:.0} customers/s)",
        scores.len(),
        engine.describe(),
        scores.len() as f64 / secs
    );

    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&x, &y| scores.ltv[y].total_cmp(&scores.ltv[x]));
    println!("\n   top customers by predicted LTV (random weights: the machinery, not real predictions)");
    println!("   {:<10} {:>12} {:>10} {:>8} {:>8}", "customer", "ltv", "p_purchase", "churn", "segment");
    for &i in order.iter().take(5) {
        println!(
            "   C{i:06}    {:>12.2} {:>10.3} {:>8.3} {:>8}",
            scores.ltv[i], scores.p_purchase[i], scores.churn_probability[i], scores.segment[i]
        );
    }
    println!(
        "\n   next: ltvx info {}    ltvx score {} --features {}",
        model_path.display(),
        model_path.display(),
        features_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
