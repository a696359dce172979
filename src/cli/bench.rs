//! `ltvx bench`: how fast each backend scores a model here, in a form to paste into a report; with
//! `--server URL`, the load generator against a running `ltvx serve`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use ltvx::backend::cpu::Isa;
use ltvx::backend::cuda::bench::DeviceFigures;
use ltvx::backend::{self, BackendChoice, BackendKind};
use ltvx::bench::{self, Config, Environment, Row, peak};
use ltvx::data::synthetic;
use ltvx::model::block_prune::BlockShape;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{Model, Precision, Preset};
use ltvx::serve::loadgen::{self, InProcess, LoadArgs};
use ltvx::{Error, Result};

use super::device_args::OpenclArgs;
use super::init::parse_precision;
use super::log;

#[derive(clap::Args)]
pub struct Args {
    /// A model file; without it, a random model from --preset / --precision / --sparsity. With
    /// --server: the served file, whose in-process throughput (batch 64, one thread) is measured beside
    /// the server's.
    model: Option<PathBuf>,
    /// The model file, as a flag (the same as the positional MODEL).
    #[arg(long = "model", value_name = "MODEL", conflicts_with = "model")]
    model_flag: Option<PathBuf>,
    /// Load a running server (http://HOST:PORT) instead of benchmarking in process.
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long, default_value = "base")]
    preset: Preset,
    #[arg(long, default_value = "int8", value_parser = parse_precision)]
    precision: Precision,
    /// Fraction of each layer's weights zeroed (random models only), in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    sparsity: f64,
    /// Blocks the sparsity prunes (ROWSxCOLS, the kernels' order), as `ltvx init --block`. 32x4 is
    /// the VNNI kernels' fastest (two 16-channel strips share each skipped group); 16x4 is also skipped.
    #[arg(long, default_value = "32x4")]
    block: BlockShape,
    /// Backends: cpu, reference, cuda, opencl, or all (comma-separated).
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    backend: Vec<String>,
    /// CPU kernel families: auto (the best here), all (every one this CPU has), or a list.
    #[arg(long, default_value = "auto", value_delimiter = ',')]
    isa: Vec<String>,
    #[arg(long, default_value = "1,16,256,4096,65536", value_delimiter = ',')]
    batch: Vec<usize>,
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Seconds of timing per configuration, after a warm-up of a tenth of it (default 2); with
    /// --server, seconds of load (default 10).
    #[arg(long)]
    duration: Option<f64>,
    /// The peak multiply-adds per second of one core, in G, instead of measuring it.
    #[arg(long)]
    peak: Option<f64>,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: OpenclArgs,
}

#[derive(Serialize)]
struct Skipped {
    backend: BackendKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    isa: Option<Isa>,
    reason: String,
}

#[derive(Serialize)]
struct Report {
    environment: Environment,
    model: ModelInfo,
    /// G multiply-adds per second of one core, per kernel family and precision.
    peak_gmacs_per_core: HashMap<String, f64>,
    rows: Vec<Row>,
    /// The GPU's own figures for each CUDA batch: resident kernels, copies, the pipeline, the peak.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cuda: Vec<DeviceFigures>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct ModelInfo {
    name: String,
    precision: Precision,
    hash: String,
    /// Multiply-adds per customer, dense.
    macs: u64,
}

pub fn run(mut a: Args) -> Result<ExitCode> {
    a.model = a.model.take().or(a.model_flag.take());
    if let Some(d) = a.duration.filter(|d| !(*d > 0.0 && d.is_finite())) {
        return Err(Error::Input(format!("--duration {d} must be a positive number of seconds")));
    }
    if let Some(url) = a.server.take() {
        return load_server(&url, a);
    }
    let duration = Duration::from_secs_f64(a.duration.unwrap_or(2.0));
    if a.batch.contains(&0) || a.threads.contains(&0) {
        return Err(Error::Input("--batch and --threads take positive numbers".into()));
    }
    let model = load_model(&a)?;
    let mut report = Report {
        environment: Environment::here(),
        model: ModelInfo {
            name: model_name(&a, &model),
            precision: model.precision(),
            hash: model.hash(),
            macs: model.macs(),
        },
        peak_gmacs_per_core: HashMap::new(),
        rows: Vec::new(),
        cuda: Vec::new(),
        skipped: Vec::new(),
    };
    let configs = configs(&a, &model, &mut report.skipped)?;
    let mut batches = HashMap::new();
    for c in configs {
        super::check_interrupt()?;
        // The share of peak is of this machine's ceiling: the best family's, whichever family runs.
        let family = Isa::best();
        let key = format!("{family}/{}", model.precision());
        let per_core = *report
            .peak_gmacs_per_core
            .entry(key)
            .or_insert_with(|| a.peak.unwrap_or_else(|| peak::per_core(family, model.precision()) / 1e9));
        let batch = batches.entry(c.batch).or_insert_with(|| synthetic::customers(model.graph().inputs, c.batch, 7));
        log::info(&format!(
            "{} {} batch {} threads {}…",
            c.backend,
            c.isa.map_or(String::new(), |i| i.to_string()),
            c.batch,
            c.threads
        ));
        report.rows.push(bench::measure(&model, batch, c, &a.device.opencl(), duration, per_core * 1e9)?);
        // The GPU's own figures, once per batch (host threads do not change them).
        if c.backend == BackendKind::Cuda && c.threads == a.threads[0] {
            let device = a.device.opencl().device.unwrap_or(0);
            match ltvx::backend::cuda::bench::measure(&model, device, batch, duration) {
                Ok(figures) => report.cuda.push(figures),
                Err(e) => report.skipped.push(Skipped {
                    backend: BackendKind::Cuda,
                    isa: None,
                    reason: format!("device figures at batch {}: {e}", c.batch),
                }),
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| Error::Input(e.to_string()))?);
    } else {
        print_table(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The load generator: `a.model` is the served file (for the in-process yardstick), the first
/// `--backend` the yardstick's backend.
fn load_server(url: &str, mut a: Args) -> Result<ExitCode> {
    a.load.duration = a.duration.unwrap_or(10.0);
    let backend: BackendChoice = a.backend.first().map_or("auto", String::as_str).parse().map_err(Error::Input)?;
    let in_process = a.model.as_deref().map(|model| InProcess { model, backend });
    let report = loadgen::run(url, &a.load, in_process)?;
    if a.json {
        super::print_json(&serde_json::to_value(&report).expect("the report serializes"))?;
    } else {
        super::with_stdout(|w| writeln!(w, "{}", report.text()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn load_model(a: &Args) -> Result<Model> {
    if let Some(path) = &a.model {
        return Model::open(path);
    }
    if !(0.0..1.0).contains(&a.sparsity) {
        return Err(Error::Input(format!("--sparsity {} is outside [0, 1)", a.sparsity)));
    }
    let block = (a.sparsity > 0.0).then_some(a.block);
    let opts =
        InitOptions { preset: a.preset, precision: a.precision, seed: 7, sparsity: a.sparsity, inputs: None, block };
    init(&opts)?.into_model()
}

fn model_name(a: &Args, model: &Model) -> String {
    match &a.model {
        Some(p) => p.display().to_string(),
        None => {
            let sparse = if a.sparsity > 0.0 {
                format!(", {} of {}x{} blocks pruned", a.sparsity, a.block.rows, a.block.cols)
            } else {
                String::new()
            };
            format!("{} preset, random weights{sparse}", a.preset)
        }
    }
    .to_string()
        + &format!(" ({})", model.graph().name)
}

/// The GPU's own figures: resident kernel time, copies, the pipelined run against the copy bound,
/// the share of the int8 tensor-core peak, and the slowest kernels.
fn print_cuda(figures: &[DeviceFigures]) {
    let Some(first) = figures.first() else { return };
    println!("cuda: {} · driver {} (times from CUDA events; copies page-locked)", first.device, first.driver);
    println!(
        "{:>7} {:>11} {:>13} {:>9} {:>9} {:>13} {:>13} {:>6} {:>8} {:>6}",
        "batch", "kernels ms", "resident/s", "in ms", "out ms", "copy bound/s", "pipelined/s", "of cb", "TOPS", "peak"
    );
    for f in figures {
        println!(
            "{:>7} {:>11.3} {:>13.0} {:>9.3} {:>9.3} {:>13.0} {:>13.0} {:>5.0}% {:>8.1} {:>6}",
            f.batch,
            f.resident_ms,
            f.resident_customers_per_s,
            f.h2d_ms,
            f.d2h_ms,
            f.copy_bound_customers_per_s,
            f.pipelined_customers_per_s,
            f.pipelined_share_of_copy_bound * 100.0,
            f.resident_tops,
            f.peak_share.map_or("-".to_string(), |p| format!("{:.0}%", p * 100.0))
        );
    }
    if let Some(peak) = first.peak_tops {
        println!("int8 tensor-core peak measured here: {peak:.0} TOPS");
    }
    if let Some(last) = figures.last() {
        let kernels: Vec<String> = last.kernels.iter().map(|k| format!("{} {:.3}", k.kernel, k.ms)).collect();
        println!("kernels at batch {} (ms): {}", last.batch, kernels.join(", "));
    }
}

/// Every configuration to time; backends and families that cannot run here go to `skipped`.
fn configs(a: &Args, model: &Model, skipped: &mut Vec<Skipped>) -> Result<Vec<Config>> {
    let kinds: Vec<BackendKind> = if a.backend.iter().any(|b| b == "all") {
        BackendKind::ALL.to_vec()
    } else {
        a.backend.iter().map(|b| parse_kind(b)).collect::<Result<_>>()?
    };
    let isas: Vec<Isa> = if a.isa.iter().any(|i| i == "all") {
        Isa::available_all()
    } else {
        a.isa.iter().map(|i| auto_or(i)).collect::<Result<_>>()?
    };
    let mut out = Vec::new();
    for kind in kinds {
        let families: Vec<Option<Isa>> =
            if kind == BackendKind::Cpu { isas.iter().copied().map(Some).collect() } else { vec![None] };
        for isa in families {
            let options =
                backend::Options { threads: 1, cpu_isa: isa, opencl: a.device.opencl(), ..Default::default() };
            if let Err(e) = ltvx::engine::Engine::build_with(model, backend::BackendChoice::Kind(kind), &options) {
                let reason = match e {
                    Error::Backend { reason, .. } => reason,
                    other => other.to_string(),
                };
                skipped.push(Skipped { backend: kind, isa, reason });
                continue;
            }
            // The reference backend is one thread by definition; an OpenCL device schedules its own.
            let threads: Vec<usize> =
                if matches!(kind, BackendKind::Reference | BackendKind::Opencl) { vec![1] } else { a.threads.clone() };
            for &t in &threads {
                for &b in &a.batch {
                    out.push(Config { backend: kind, isa, batch: b, threads: t });
                }
            }
        }
    }
    Ok(out)
}

/// A named family, or for `auto` the one `LTVX_CPU_ISA` forces, else the best here.
fn auto_or(name: &str) -> Result<Isa> {
    if name == "auto" {
        return Isa::from_env().map(|forced| forced.unwrap_or_else(Isa::best)).map_err(Error::Input);
    }
    name.parse::<Isa>().map_err(Error::Input)
}

fn parse_kind(s: &str) -> Result<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .find(|k| k.to_string() == s)
        .ok_or_else(|| Error::Input(format!("unknown backend {s:?} (expected cpu, reference, cuda, opencl or all)")))
}

fn print_table(r: &Report) {
    let e = &r.environment;
    println!(
        "ltvx {} ({}), {}; {} · {} hardware threads · ISA {}",
        e.ltvx_version,
        e.commit,
        e.date,
        e.cpu,
        e.hardware_threads,
        e.isa.join(" ")
    );
    println!(
        "model: {} · {} · {} MACs/customer · hash {}",
        r.model.name, r.model.precision, r.model.macs, r.model.hash
    );
    let mut peaks: Vec<_> = r.peak_gmacs_per_core.iter().collect();
    peaks.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in peaks {
        println!("peak ({k}): {v:.1} G multiply-adds/s per core");
    }
    println!(
        "{:<10} {:<11} {:>6} {:>3} {:>12} {:>21} {:>9} {:>9} {:>9} {:>9} {:>8} {:>6} {:>7}",
        "backend",
        "isa",
        "batch",
        "thr",
        "cust/s",
        "spread (min–max)",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "MACs run",
        "GMAC/s",
        "peak",
        "max RSS"
    );
    for row in &r.rows {
        println!(
            "{:<10} {:<11} {:>6} {:>3} {:>12.0} {:>21} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>8.1} {:>6} {:>7.0}",
            row.backend.to_string(),
            row.isa.map_or("-".to_string(), |i| i.to_string()),
            row.batch,
            row.threads,
            row.customers_per_s,
            format!("{:.0}–{:.0}", row.customers_per_s_min, row.customers_per_s_max),
            row.latency.p50_us,
            row.latency.p99_us,
            row.latency.p999_us,
            row.macs.executed,
            row.gmacs,
            row.peak_share.map_or("-".to_string(), |p| format!("{:.0}%", p * 100.0)),
            row.peak_rss_mb
        );
    }
    // Where the plan has more to say than its backend's name: the device and its kernel vs transfer time.
    for row in r.rows.iter().filter(|row| row.backend == BackendKind::Opencl) {
        println!("batch {}: {}", row.batch, row.plan);
    }
    print_cuda(&r.cuda);
    for s in &r.skipped {
        println!(
            "{:<10} {:<11} unavailable: {}",
            s.backend.to_string(),
            s.isa.map_or("-".to_string(), |i| i.to_string()),
            s.reason
        );
    }
}
