//! The in-process benchmark behind `ltvx bench`: for each configuration (backend, kernel family,
//! batch, threads) an engine scores one synthetic batch again and again; the timed region is one
//! `Engine::score` call — f32 inputs in host memory to scores, input quantization and the epilogue
//! included. Customers/s is the median over repetitions (with min and max as the spread), latency the
//! percentiles of single calls, and speed is also stated as multiply-adds per second and as a share of
//! the peak measured by `peak`.

pub mod peak;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::cpu::Isa;
use crate::backend::opencl::Selection;
use crate::backend::{BackendChoice, BackendKind, Options};
use crate::engine::{Batch, Engine};
use crate::error::Result;
use crate::model::{Model, Precision};

/// Repetitions a configuration's time is divided into (the spread is over these).
pub const REPETITIONS: usize = 10;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub backend: BackendKind,
    /// The CPU kernel family (`None` for other backends).
    pub isa: Option<Isa>,
    pub batch: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub backend: BackendKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isa: Option<Isa>,
    pub precision: Precision,
    /// Share of the model's multiply-adds this backend skips (zero weight blocks).
    pub skipped_share: f64,
    pub batch: usize,
    /// Threads the batch actually ran on: the CPU backend gives each thread at least
    /// `MIN_ROWS_PER_THREAD` customers, so small batches run on fewer than asked.
    pub threads: usize,
    pub customers_per_s: f64,
    pub customers_per_s_min: f64,
    pub customers_per_s_max: f64,
    pub calls: usize,
    /// Multiply-adds per customer: the model's, and those this backend executes.
    pub macs: Macs,
    /// Of one `score` call (for batch 1, of one customer).
    pub latency: Latency,
    /// G multiply-adds per second executed (skipped zero blocks not counted).
    pub gmacs: f64,
    /// `gmacs` over the measured peak of `threads` cores for this precision (CPU backend only: other
    /// devices have their own ceilings).
    pub peak_share: Option<f64>,
    /// The process's peak resident memory so far, MB.
    pub peak_rss_mb: f64,
    /// The plan as the engine describes it after the runs (device and, for OpenCL, device time).
    pub plan: String,
}

/// Multiply-adds one customer costs, dense and as the backend executes them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Macs {
    pub dense: u64,
    pub executed: u64,
}

/// Measures one configuration for about `duration` after a warm-up.
/// `opencl` names the device of OpenCL configurations.
pub fn measure(
    model: &Model,
    batch: &Batch,
    config: Config,
    opencl: &Selection,
    duration: Duration,
    peak_per_core: f64,
) -> Result<Row> {
    let options =
        Options { threads: config.threads, cpu_isa: config.isa, opencl: opencl.clone(), ..Options::default() };
    let engine = Engine::build_with(model, BackendChoice::Kind(config.backend), &options)?;
    let threads = match config.backend {
        BackendKind::Cpu => config.threads.min(batch.len() / crate::backend::cpu::MIN_ROWS_PER_THREAD).max(1),
        _ => 1,
    };
    let macs = Macs { dense: model.macs(), executed: engine.executed_macs().unwrap_or(model.macs()) };
    let warm_until = Instant::now() + duration / 10;
    while Instant::now() < warm_until {
        engine.score(batch)?;
    }
    let slice = duration / REPETITIONS as u32;
    let mut calls_us = Vec::new();
    let mut rates = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        let (start, mut calls) = (Instant::now(), 0usize);
        loop {
            let t = Instant::now();
            std::hint::black_box(engine.score(batch)?);
            calls_us.push(t.elapsed().as_secs_f64() * 1e6);
            calls += 1;
            if start.elapsed() >= slice {
                break;
            }
        }
        rates.push((calls * batch.len()) as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    calls_us.sort_by(f64::total_cmp);
    let customers_per_s = median(&rates);
    let gmacs = customers_per_s * macs.executed as f64 / 1e9;
    Ok(Row {
        backend: config.backend,
        isa: config.isa,
        precision: model.precision(),
        skipped_share: 1.0 - macs.executed as f64 / macs.dense.max(1) as f64,
        batch: batch.len(),
        threads,
        customers_per_s,
        customers_per_s_min: rates[0],
        customers_per_s_max: rates[rates.len() - 1],
        calls: calls_us.len(),
        macs,
        latency: Latency {
            p50_us: percentile(&calls_us, 0.5),
            p90_us: percentile(&calls_us, 0.9),
            p99_us: percentile(&calls_us, 0.99),
            p999_us: percentile(&calls_us, 0.999),
        },
        gmacs,
        peak_share: (config.backend == BackendKind::Cpu).then(|| gmacs * 1e9 / (peak_per_core * threads as f64)),
        peak_rss_mb: peak_rss_mb(),
        plan: engine.describe(),
    })
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Nearest-rank percentile of sorted, non-empty values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// VmHWM of this process (Linux), MB; 0 where unknown.
pub fn peak_rss_mb() -> f64 {
    proc_status_kib("VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// A `kB` field of this process's `/proc/self/status` (Linux; `None` elsewhere), e.g. `VmRSS`.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub cpu: String,
    pub isa: Vec<&'static str>,
    pub hardware_threads: usize,
    pub ltvx_version: &'static str,
    pub commit: &'static str,
    pub date: String,
}

impl Environment {
    pub fn here() -> Environment {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Environment {
            cpu,
            isa: crate::backend::cpu::isa_features(),
            hardware_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            ltvx_version: env!("CARGO_PKG_VERSION"),
            commit: option_env!("LTVX_COMMIT").unwrap_or("unknown"),
            date: today(),
        }
    }
}

/// The current UTC time, ISO 8601.
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(String::new, |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99), percentile(&v, 0.999)), (500.0, 990.0, 999.0));
        assert_eq!(percentile(&[7.0], 0.999), 7.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }
}
