//! `ltvx bench`: with `--server URL`, the load generator against a running `ltvx serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use ltvx::backend::BackendChoice;
use ltvx::serve::loadgen::{self, InProcess, LoadArgs};
use ltvx::{Error, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Load a running server (http://HOST:PORT) instead of benchmarking in process.
    #[arg(long)]
    server: Option<String>,
    /// The model file; with --server, the served one, whose in-process throughput (batch 64, one
    /// thread) is measured beside the server's.
    #[arg(long)]
    model: Option<PathBuf>,
    /// auto, reference, cpu, cuda or opencl.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    #[command(flatten)]
    load: LoadArgs,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let Some(url) = a.server else {
        return Err(Error::Input("in-process bench not in this build: give --server URL".into()));
    };
    let in_process = a.model.as_deref().map(|model| InProcess { model, backend: a.backend });
    let report = loadgen::run(&url, &a.load, in_process)?;
    if a.json {
        super::print_json(&serde_json::to_value(&report).expect("the report serializes"))?;
    } else {
        super::with_stdout(|w| writeln!(w, "{}", report.text()))?;
    }
    Ok(ExitCode::SUCCESS)
}
