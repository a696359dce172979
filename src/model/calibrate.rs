//! Calibration: the range of every tensor of a float model over a set of customers, from which the
//! int8 activation parameters are chosen.

use std::collections::HashMap;

use crate::backend::reference::ReferencePlan;
use crate::engine::Batch;
use crate::error::{Error, Result};
use crate::model::{Model, Precision};

/// Observed [min, max] per tensor name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// How activation ranges are chosen from what calibration observed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The P-th and (100−P)-th percentiles (e.g. 99.99): rare outliers are clipped instead of
    /// stretching the scale for everyone else.
    Percentile(f64),
}

impl Method {
    /// What `ltvx compress` uses unless told otherwise. On CDNOW's five splits (docs/ACCURACY.md)
    /// minmax let a handful of extreme customers stretch some scales, and one split's mean churn
    /// probability moved by 0.0053 (target 0.005); the 99.99th percentile kept every int8 target with
    /// margin (worst mean |Δchurn| 0.0035), at the price of clipping those few customers harder.
    pub const DEFAULT: Method = Method::Percentile(99.99);
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "minmax" {
            return Ok(Method::MinMax);
        }
        match s.strip_prefix("percentile:").map(str::parse::<f64>) {
            Some(Ok(p)) if p > 50.0 && p <= 100.0 => Ok(Method::Percentile(p)),
            _ => Err(format!("unknown calibration {s:?} (expected minmax or percentile:P with 50 < P ≤ 100)")),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::MinMax => f.write_str("minmax"),
            Method::Percentile(p) => write!(f, "percentile:{p}"),
        }
    }
}

/// Values kept per tensor for percentiles: enough for 99.99 % to be meaningful, bounded in memory.
const PERCENTILE_SAMPLE: usize = 1 << 20;

/// Runs the float reference over `batch` and records each tensor's min and max.
pub fn observe_ranges(model: &Model, batch: &Batch) -> Result<Ranges> {
    observe(model, batch, Method::MinMax)
}

/// Runs the float reference over `batch` and chooses each tensor's range by `method`.
pub fn observe(model: &Model, batch: &Batch, method: Method) -> Result<Ranges> {
    if model.precision() == Precision::Int8 {
        return Err(Error::Quant("calibration needs a float model".into()));
    }
    if batch.is_empty() {
        return Err(Error::Quant("calibration needs at least one customer".into()));
    }
    let plan = ReferencePlan::new(model);
    let mut ranges: Ranges = HashMap::new();
    let mut samples: HashMap<String, Vec<f32>> = HashMap::new();
    for i in 0..batch.len() {
        plan.forward_f32(batch.seq_row(i), batch.stat_row(i), &mut |name, values| {
            let r = ranges.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &v in values {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
            if let Method::Percentile(_) = method {
                // Whole customers, while the sample has room: percentiles over a prefix of a
                // shuffled-enough population (customers come in log order, not sorted by value).
                let kept = samples.entry(name.to_string()).or_default();
                if kept.len() + values.len() <= PERCENTILE_SAMPLE {
                    kept.extend_from_slice(values);
                }
            }
        });
    }
    if let Method::Percentile(p) = method {
        for (name, mut values) in samples {
            if values.is_empty() {
                continue;
            }
            values.sort_by(f32::total_cmp);
            let at = |q: f64| values[((q / 100.0) * (values.len() - 1) as f64).round() as usize];
            ranges.insert(name, (at(100.0 - p), at(p)));
        }
    }
    Ok(ranges)
}
