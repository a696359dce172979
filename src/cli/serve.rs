//! `ltvx serve`: the online scoring server (see `ltvx::serve` and docs/API.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ltvx::Result;
use ltvx::backend::BackendChoice;
use ltvx::serve::{Options, read_token};

use super::log;

#[derive(clap::Args)]
pub struct Args {
    /// The model file (SIGHUP or POST /admin/reload re-reads it).
    model: PathBuf,
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// auto, reference, cpu, cuda or opencl.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Most customers in one engine call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_batch: u64,
    /// Longest a customer waits for others to fill its batch, microseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    max_queue_delay_us: u64,
    /// Most customers queued and not yet scored; requests beyond it get 503 at once.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    queue_capacity: u64,
    /// Largest request body accepted (413 beyond it).
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    max_body_bytes: u64,
    /// A file holding a bearer token; every route but /health/* then needs `Authorization: Bearer TOKEN`.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Seconds a client may take to send a request's head, and then its body (408 after).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    request_timeout_s: u64,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_timeout_s: u64,
    /// Threads for HTTP and JSON (default: the number of cores); scoring runs on its own thread.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    io_threads: Option<u64>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let auth_token = a.auth_token_file.as_deref().map(read_token).transpose()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    ltvx::serve::run(Options {
        model: a.model,
        listen: a.listen,
        backend: a.backend,
        max_batch: a.max_batch as usize,
        max_queue_delay: Duration::from_micros(a.max_queue_delay_us),
        queue_capacity: a.queue_capacity as usize,
        max_body_bytes: a.max_body_bytes as usize,
        auth_token,
        request_timeout: Duration::from_secs(a.request_timeout_s),
        drain_timeout: Duration::from_secs(a.drain_timeout_s),
        io_threads: a.io_threads.map_or(cores, |n| n as usize),
        info: log::info,
        warn: log::warn,
    })?;
    log::info("stopped");
    Ok(ExitCode::SUCCESS)
}
