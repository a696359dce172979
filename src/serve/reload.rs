//! The model being served and its hot reload: a new file is opened, validated, built for the backend
//! and warmed up off to the side; only then does it replace the current one, in one pointer swap.
//! Requests hold an `Arc` of the model they started on, so in-flight work finishes on the old model,
//! which is dropped when its last request is done. A file that fails any step is refused and the old
//! model keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde_json::{Value, json};

use super::metrics::ModelLabels;
use crate::backend::BackendChoice;
use crate::data::feature_spec::FeatureSpec;
use crate::engine::{Batch, Engine};
use crate::error::Result;
use crate::eval::evaluate::feature_spec;
use crate::model::Model;
use crate::model::summary::summary;

/// A model ready to score.
pub struct Loaded {
    pub engine: Engine,
    /// What builds features from raw transactions, or why this model cannot (an `ltvx init` model).
    pub spec: std::result::Result<FeatureSpec, String>,
    /// `ltvx info --json` of the file.
    pub info: Value,
    pub name: String,
    pub hash: String,
    /// 1 for the model the server started with, one more for each successful reload.
    pub version: u64,
    pub path: PathBuf,
    pub labels: ModelLabels,
    /// `{"name", "version", "hash"}`, as every score response starts.
    pub identity: Value,
}

impl Loaded {
    /// Opens, builds and warms up a model: every batch size the batcher can form (powers of two up
    /// to `max_batch`, and `max_batch`) runs once, so the first real requests pay no first-call costs.
    pub fn load(path: &Path, backend: BackendChoice, version: u64, max_batch: usize) -> Result<Loaded> {
        Loaded::build(Model::open(path)?, path, backend, version, max_batch)
    }

    /// As [`Loaded::load`], for a model file already opened (and so validated).
    pub fn build(model: Model, path: &Path, backend: BackendChoice, version: u64, max_batch: usize) -> Result<Loaded> {
        let engine = Engine::build(&model, backend)?;
        let spec = feature_spec(&model).map_err(|e| e.to_string());
        let info = summary(&model);
        let name = model.graph().name.clone();
        let hash = model.hash();
        warm_up(&engine, max_batch)?;
        let labels = ModelLabels { backend: engine.backend().to_string(), version };
        let identity = json!({"name": name, "version": version, "hash": hash});
        Ok(Loaded { engine, spec, info, name, hash, version, path: path.to_path_buf(), labels, identity })
    }
}

fn warm_up(engine: &Engine, max_batch: usize) -> Result<()> {
    let sizes = engine.input_sizes();
    let per_customer = sizes.seq_channels * sizes.seq_len;
    let mut rows: Vec<usize> =
        std::iter::successors(Some(1usize), |&b| (b < max_batch).then_some(b * 2)).map(|b| b.min(max_batch)).collect();
    rows.dedup();
    for b in rows {
        let batch = Batch::from_vecs(sizes, vec![0.0; b * per_customer], vec![0.0; b * sizes.static_features])?;
        engine.score(&batch)?;
    }
    Ok(())
}

/// The current model, swapped whole on reload.
pub struct Slot {
    current: RwLock<Arc<Loaded>>,
    /// Held for a whole reload, so two reloads cannot interleave (and version numbers stay in order).
    reloading: Mutex<()>,
    backend: BackendChoice,
    max_batch: usize,
}

/// What a reload did.
pub struct Reloaded {
    pub previous: Value,
    pub current: Arc<Loaded>,
    pub seconds: f64,
}

impl Slot {
    pub fn new(first: Loaded, backend: BackendChoice, max_batch: usize) -> Slot {
        Slot { current: RwLock::new(Arc::new(first)), reloading: Mutex::new(()), backend, max_batch }
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.read().expect("model lock").clone()
    }

    /// Loads `path` (default: the current model's file, re-read) and swaps it in. Blocking: run it
    /// off the async runtime.
    pub fn reload(&self, path: Option<PathBuf>) -> Result<Reloaded> {
        let _one_at_a_time = self.reloading.lock().expect("reload lock");
        let start = Instant::now();
        let old = self.current();
        let path = path.unwrap_or_else(|| old.path.clone());
        let new = Arc::new(Loaded::load(&path, self.backend, old.version + 1, self.max_batch)?);
        *self.current.write().expect("model lock") = new.clone();
        Ok(Reloaded { previous: old.identity.clone(), current: new, seconds: start.elapsed().as_secs_f64() })
    }
}
