//! The engine: a model, a plan built for one backend, and the shared host epilogue.

pub mod batch;
pub mod scores;

pub use batch::Batch;
pub use scores::{Epilogue, HeadOutputs, HeadValues, Scores};

use crate::backend::{self, BackendChoice, BackendKind, Plan, Trace};
use crate::error::{Error, Result};
use crate::model::graph::{HeadKind, InputSizes};
use crate::model::{Model, Precision};

pub struct Engine {
    plan: Box<dyn Plan>,
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
        Ok(self.epilogue.apply(&heads, self.segments))
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
