//! The engine: a model, a plan built for one backend, and the shared host epilogue.

pub mod batch;
pub mod scores;

pub use batch::Batch;
pub use scores::{Epilogue, HeadOutputs, HeadValues, Scores};

use crate::backend::{self, BackendChoice, BackendKind, Plan, Trace};
use crate::error::{Error, Result};
use crate::model::graph::{HeadKind, InputSizes};
use crate::model::{Model, Precision};

/// Rows below which the epilogue stays on one thread.
const EPILOGUE_ROWS_PER_THREAD: usize = 1024;

pub struct Engine {
    plan: Box<dyn Plan>,
    /// Threads the host epilogue splits a large batch across (the plan's own setting).
    threads: usize,
    epilogue: Epilogue,
    sizes: InputSizes,
    segments: usize,
}

impl Engine {
    /// Builds a plan for `choice` (`auto` takes the fastest usable backend).
    pub fn build(model: &Model, choice: BackendChoice) -> Result<Engine> {
        Engine::build_with(model, choice, &backend::Options::default())
    }

    /// As `build`, with the threads per batch and other plan options.
    pub fn build_with(model: &Model, choice: BackendChoice, options: &backend::Options) -> Result<Engine> {
        let plan = backend::build_plan(model, choice, options)?;
        Ok(Engine {
            plan,
            threads: options.threads.max(1),
            epilogue: epilogue_for(model),
            sizes: model.graph().inputs,
            segments: model.graph().segments(&model.shapes),
        })
    }

    pub fn backend(&self) -> BackendKind {
        self.plan.backend()
    }

    pub fn describe(&self) -> String {
        self.plan.describe()
    }

    /// Multiply-adds per customer this engine executes (fewer than the model's where zero blocks are skipped).
    pub fn executed_macs(&self) -> Option<u64> {
        self.plan.executed_macs()
    }

    pub fn input_sizes(&self) -> InputSizes {
        self.sizes
    }

    pub fn segments(&self) -> usize {
        self.segments
    }

    pub fn score(&self, batch: &Batch) -> Result<Scores> {
        self.check_batch(batch)?;
        let heads = self.plan.run(batch)?;
        Ok(self.scores(&heads, batch.len()))
    }

    /// The host epilogue, on the calling thread or, for a large batch, split by rows across the
    /// engine's threads (each row's scores depend on that row alone).
    fn scores(&self, heads: &HeadOutputs, rows: usize) -> Scores {
        let parts = self.threads.min(rows / EPILOGUE_ROWS_PER_THREAD).max(1);
        if parts == 1 {
            return self.epilogue.apply_rows(heads, self.segments, 0..rows);
        }
        let ranges: Vec<_> = (0..parts).map(|i| rows * i / parts..rows * (i + 1) / parts).collect();
        let parts: Vec<Scores> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges[1..]
                .iter()
                .map(|r| scope.spawn(|| self.epilogue.apply_rows(heads, self.segments, r.clone())))
                .collect();
            let first = self.epilogue.apply_rows(heads, self.segments, ranges[0].clone());
            std::iter::once(first)
                .chain(handles.into_iter().map(|h| h.join().expect("an epilogue thread panicked")))
                .collect()
        });
        let mut all = Scores { segments: self.segments, ..Default::default() };
        for p in &parts {
            all.append(p);
        }
        all
    }

    /// The debug plan: u8 tensors at every fusion boundary and the raw head outputs.
    pub fn trace(&self, batch: &Batch) -> Result<Trace> {
        self.check_batch(batch)?;
        self.plan.trace(batch)
    }

    fn check_batch(&self, batch: &Batch) -> Result<()> {
        if batch.sizes != self.sizes {
            return Err(Error::Input(format!(
                "batch has input sizes {:?}; the model needs {:?}",
                batch.sizes, self.sizes
            )));
        }
        Ok(())
    }
}

/// The int8 heads' dequantization factors, from the model's quantization entry.
pub fn epilogue_for(model: &Model) -> Epilogue {
    let scales = |head: HeadKind| -> Option<Vec<f32>> {
        let dense = model.graph().head_dense(head);
        if model.layer_precision(&dense.name) != Precision::Int8 {
            return None;
        }
        model.quantization().and_then(|q| q.layers.get(&dense.name)).map(|l| l.acc_scale.clone())
    };
    Epilogue { ltv: scales(HeadKind::Ltv), churn: scales(HeadKind::Churn), segment: scales(HeadKind::Segment) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendKind, Options};
    use crate::model::init::{InitOptions, init};
    use crate::model::{Precision, Preset};

    /// The epilogue split across threads gives the same scores, in the same order, as one thread.
    #[test]
    fn threaded_epilogue_matches_one_thread() {
        let opts = InitOptions {
            preset: Preset::Tiny,
            precision: Precision::Int8,
            seed: 2,
            sparsity: 0.0,
            inputs: None,
            block: None,
        };
        let model = init(&opts).unwrap().into_model().unwrap();
        let batch = crate::data::synthetic::customers(model.graph().inputs, 3 * EPILOGUE_ROWS_PER_THREAD + 7, 5);
        let score = |threads| {
            let options = Options { threads, ..Default::default() };
            Engine::build_with(&model, BackendChoice::Kind(BackendKind::Reference), &options)
                .unwrap()
                .score(&batch)
                .unwrap()
        };
        assert_eq!(score(3), score(1));
    }
}
