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
    super::with_stdout(|w| {
        for p in probes {
            let backend = p.backend.to_string();
            match (&p.reason, p.usable) {
                (_, true) => writeln!(w, "{backend:<10} usable")?,
                (Some(r), false) => writeln!(w, "{backend:<10} unavailable: {r}")?,
                (None, false) => writeln!(w, "{backend:<10} unavailable")?,
            }
            for d in &p.devices {
                writeln!(w, "    [{}] {}: {}", d.index, d.name, d.detail)?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
