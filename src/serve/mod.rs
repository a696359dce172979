//! `ltvx serve`: the online scoring server. HTTP/1.1 on tokio + hyper; the routes are in [`http`],
//! the request formats in [`api`] (JSON) and [`binary`] (the fast path), the dynamic batcher in
//! [`batcher`], the served model and its hot reload in [`reload`], Prometheus metrics in [`metrics`].
//! [`loadgen`] is the load generator of `ltvx bench --server`. docs/API.md documents the API.
//!
//! Lifecycle: the model file is opened and validated, the listener opens (`/health/live` answers at
//! once), the model is built for its backend and warmed up in the background (`/health/ready` says
//! 200 only then), SIGHUP reloads the model file, and SIGTERM or Ctrl-C stops accepting connections,
//! lets in-flight requests finish (up to the drain timeout) and returns.

pub mod api;
pub mod batcher;
pub mod binary;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod reload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::backend::BackendChoice;
use crate::error::{Error, Result};
use crate::model::Model;
use batcher::Batcher;
use metrics::Metrics;
use reload::{Loaded, Slot};

/// Everything `ltvx serve` is told.
#[derive(Clone)]
pub struct Options {
    pub model: PathBuf,
    pub listen: SocketAddr,
    pub backend: BackendChoice,
    /// Most customers in one engine call.
    pub max_batch: usize,
    /// Longest a customer waits for others to fill its batch.
    pub max_queue_delay: Duration,
    /// Most customers accepted and not yet scored; beyond it requests get 503.
    pub queue_capacity: usize,
    pub max_body_bytes: usize,
    /// Every route but the health checks needs `Authorization: Bearer TOKEN` when set.
    pub auth_token: Option<String>,
    /// Longest a client may take to send a request's head, and then its body.
    pub request_timeout: Duration,
    /// Longest shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// Threads of the async runtime (HTTP and JSON); scoring has its own thread.
    pub io_threads: usize,
    /// Where progress lines go (the CLI's logger).
    pub info: fn(&str),
    pub warn: fn(&str),
}

/// What the request handlers share.
pub struct State {
    /// Empty until the first model is loaded and warmed up.
    slot: OnceLock<Slot>,
    batcher: Batcher,
    metrics: Arc<Metrics>,
    opts: Options,
}

/// Runs the server until SIGTERM or Ctrl-C; `Err` when it cannot start or the model cannot be loaded.
pub fn run(opts: Options) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.io_threads)
        .enable_all()
        .build()
        .map_err(|e| Error::Input(format!("cannot start the async runtime: {e}")))?;
    let metrics = Arc::new(Metrics::default());
    let (batcher, scoring_thread) =
        Batcher::start(opts.max_batch, opts.max_queue_delay, opts.queue_capacity, metrics.clone())
            .map_err(|e| Error::Input(format!("cannot start the scoring thread: {e}")))?;
    let state = Arc::new(State { slot: OnceLock::new(), batcher, metrics, opts: opts.clone() });
    let outcome = runtime.block_on(serve(state.clone()));
    // Connections that outlived the drain timeout are dropped here; then the last handle on the
    // queue goes and the scoring thread finishes what it holds and ends.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(state);
    let _ = scoring_thread.join();
    outcome
}

async fn serve(state: Arc<State>) -> Result<()> {
    let opts = &state.opts;
    // Opening validates the whole file, quickly: a missing or corrupt model fails here, before the
    // server listens. Building the plan and warming up take longer and happen once it listens.
    let model = Model::open(&opts.model)?;
    let listener =
        TcpListener::bind(opts.listen).await.map_err(|e| Error::io(format!("listen on {}", opts.listen), e))?;
    let address = listener.local_addr().map_err(|e| Error::io("listener", e))?;
    (opts.info)(&format!("listening on http://{address}"));
    let signal_error = |e| Error::io("signal handler", e);
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let (fatal_tx, mut fatal) = mpsc::channel::<Error>(1);
    tokio::spawn(load_first(state.clone(), model, fatal_tx));
    tokio::spawn(reload_on_hangup(state.clone(), hangup));

    let (stop_tx, stop) = watch::channel(false);
    // Each connection task holds a clone; `recv` returns `None` once every one has ended.
    let (open_tx, mut open) = mpsc::channel::<()>(1);
    let outcome = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(http::connection(state.clone(), stream, stop.clone(), open_tx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors or similar: wait a little rather than spin.
                    (opts.warn)(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = terminate.recv() => break Ok(()),
            _ = interrupt.recv() => break Ok(()),
            Some(e) = fatal.recv() => break Err(e),
        }
    };
    drop(listener);
    (opts.info)("shutting down: no new connections; finishing in-flight requests");
    let _ = stop_tx.send(true);
    drop(open_tx);
    if tokio::time::timeout(opts.drain_timeout, open.recv()).await.is_err() {
        (opts.warn)(&format!("connections still open after {:?}: closing them", opts.drain_timeout));
    }
    outcome
}

/// Builds and warms up the model given on the command line; the server is ready once this is done.
async fn load_first(state: Arc<State>, model: Model, fatal: mpsc::Sender<Error>) {
    let opts = state.opts.clone();
    let loaded =
        tokio::task::spawn_blocking(move || Loaded::build(model, &opts.model, opts.backend, 1, opts.max_batch)).await;
    match loaded {
        Ok(Ok(model)) => {
            (state.opts.info)(&format!(
                "ready: {} ({}, hash {}) on the {} backend",
                model.path.display(),
                model.name,
                model.hash,
                model.engine.describe()
            ));
            let slot = Slot::new(model, state.opts.backend, state.opts.max_batch);
            // Only this task sets the slot, once.
            let _ = state.slot.set(slot);
        }
        Ok(Err(e)) => {
            let _ = fatal.send(e).await;
        }
        Err(e) => {
            let _ = fatal.send(Error::Input(format!("loading the model failed: {e}"))).await;
        }
    }
}

/// SIGHUP re-reads the model file (the usual deploy: replace the file atomically, then signal).
async fn reload_on_hangup(state: Arc<State>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        (state.opts.info)("SIGHUP: reloading the model");
        match http::reload(&state, None).await {
            Ok(r) => (state.opts.info)(&format!(
                "reloaded: {} is model version {} (hash {}), {:.2} s",
                r.current.path.display(),
                r.current.version,
                r.current.hash,
                r.seconds
            )),
            Err(e) => (state.opts.warn)(&format!("reload refused, the previous model keeps serving: {e}")),
        }
    }
}

/// The bearer token in a file: its text without surrounding whitespace (a trailing newline is usual).
pub fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Input(format!("{}: the token file is empty", path.display())));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Input(format!("{}: a bearer token is one word, without spaces", path.display())));
    }
    Ok(token.to_string())
}
