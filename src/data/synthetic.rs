//! Synthetic customers shaped like real ones: weekly purchase counts and spend (log1p-scaled, as the
//! FeatureSpec produces them) for the sequence, standardized numbers and flags for static features.
//! Used to calibrate models that have no data yet (`ltvx init`), and by benchmarks and tests.

use crate::engine::Batch;
use crate::model::graph::InputSizes;
use crate::rng::Rng;

pub fn customers(sizes: InputSizes, n: usize, seed: u64) -> Batch {
    let mut rng = Rng::derive(seed, "synthetic-customers");
    let (c, t, f) = (sizes.seq_channels, sizes.seq_len, sizes.static_features);
    let mut seq = Vec::with_capacity(n * c * t);
    let mut stat = Vec::with_capacity(n * f);
    for _ in 0..n {
        let rate = (rng.normal() - 0.7).exp(); // orders per week, lognormal across customers
        let basket = (3.4 + 0.6 * rng.normal()).exp();
        let churn_week = if rng.uniform() < 0.25 { rng.below(t) } else { t };
        let orders: Vec<u32> = (0..t).map(|w| if w < churn_week { rng.poisson(rate) } else { 0 }).collect();
        for ch in 0..c {
            for &o in &orders {
                let v = match ch {
                    0 => o as f64,
                    1 => o as f64 * basket * (0.25 * rng.normal()).exp(),
                    _ => o as f64 + rng.poisson(rate * 0.5) as f64,
                };
                seq.push(v.ln_1p() as f32);
            }
        }
        for j in 0..f {
            let v = if j % 2 == 0 { rng.normal() } else { (rng.uniform() < 0.3) as u8 as f64 };
            stat.push(v as f32);
        }
    }
    Batch::from_vecs(sizes, seq, stat).expect("synthetic customers are finite and well-shaped")
}
