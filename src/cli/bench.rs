//! `ltvx bench`: with `--server URL`, the load generator against a running `ltvx serve`.

use std::process::ExitCode;

use ltvx::serve::loadgen::{self, LoadArgs};
use ltvx::{Error, Result};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Load a running server (http://HOST:PORT) instead of benchmarking in process.
    #[arg(long)]
    server: Option<String>,
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
    let report = loadgen::run(&url, &a.load)?;
    if a.json {
        super::print_json(&serde_json::to_value(&report).expect("the report serializes"))?;
    } else {
        super::with_stdout(|w| writeln!(w, "{}", report.text()))?;
    }
    Ok(ExitCode::SUCCESS)
}
