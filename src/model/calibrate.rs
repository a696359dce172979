//! Calibration: the range of every tensor of a float model over a set of customers, from which the
//! int8 activation parameters are chosen.

use std::collections::HashMap;

use crate::backend::reference::ReferencePlan;
use crate::engine::Batch;
use crate::error::{Error, Result};
use crate::model::{Model, Precision};

/// Observed [min, max] per tensor name.
pub type Ranges = HashMap<String, (f32, f32)>;

/// Runs the float reference over `batch` and records each tensor's min and max.
pub fn observe_ranges(model: &Model, batch: &Batch) -> Result<Ranges> {
    if model.precision() == Precision::Int8 {
        return Err(Error::Quant("calibration needs a float model".into()));
    }
    if batch.is_empty() {
        return Err(Error::Quant("calibration needs at least one customer".into()));
    }
    let plan = ReferencePlan::new(model);
    let mut ranges: Ranges = HashMap::new();
    for i in 0..batch.len() {
        plan.forward_f32(batch.seq_row(i), batch.stat_row(i), &mut |name, values| {
            let r = ranges.entry(name.to_string()).or_insert((f32::INFINITY, f32::NEG_INFINITY));
            for &v in values {
                r.0 = r.0.min(v);
                r.1 = r.1.max(v);
            }
        });
    }
    Ok(ranges)
}
