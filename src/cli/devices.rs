//! `ltvx devices`: every backend, the devices it found, or the one-line reason it is unavailable.

use std::process::ExitCode;

use ltvx::Result;
use ltvx::backend::probe_all;

#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let probes = probe_all();
    if args.json {
        super::print_json(&serde_json::to_value(&probes).expect("probes serialize"))?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in probes {
        match (&p.reason, p.usable) {
            (_, true) => println!("{:<10} usable", p.backend.to_string()),
            (Some(r), false) => println!("{:<10} unavailable: {r}", p.backend.to_string()),
            (None, false) => println!("{:<10} unavailable", p.backend.to_string()),
        }
        for d in &p.devices {
            println!("    [{}] {}: {}", d.index, d.name, d.detail);
        }
    }
    Ok(ExitCode::SUCCESS)
}
