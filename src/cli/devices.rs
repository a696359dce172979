//! `ltvx devices`: every backend, the devices it found, or the one-line reason it is unavailable.

use std::process::ExitCode;

use ltvx::Result;
use ltvx::backend::{Options, probe_all};

use super::device_args::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Which device `--backend opencl` would take (marked `*`).
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let probes = probe_all(&Options { opencl: args.device.opencl(), ..Options::default() });
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
                let mark = if p.selected == Some(d.index) { '*' } else { ' ' };
                writeln!(w, "  {mark} [{}] {}: {}", d.index, d.name, d.detail)?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
