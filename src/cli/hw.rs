//! `ltvx hw`: the FPGA path — `export` writes a model's kernel source with its weights baked in and
//! the host config; `estimate` prints what that kernel would cost on a board profile.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ltvx::backend::opencl::runtime::Runtime;
use ltvx::data::synthetic;
use ltvx::hw::board::{Board, boards_dir};
use ltvx::hw::estimate::{Estimate, checked};
use ltvx::hw::export::{self, STREAM};
use ltvx::hw::net::Net;
use ltvx::hw::reuse::{self, Reuse};
use ltvx::hw::verify;
use ltvx::{Error, Model, Result};

use super::device_args::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Generate the FPGA kernel source (weights baked in) and its host config into a directory.
    Export(Export),
    /// Run an exported kernel on an OpenCL device (PoCL, an emulator, a board) against the reference,
    /// bit for bit.
    Verify(Verify),
    /// Per-layer and total DSPs, block RAM, cycles, latency and customers/s on a board (an estimate).
    Estimate(EstimateArgs),
}

#[derive(clap::Args)]
struct Target {
    /// The int8 model file.
    model: PathBuf,
    /// A board profile: a name in hw/fpga/boards or $LTVX_BOARDS (u55c, u250, agilex7_agf014), or a
    /// .toml file.
    #[arg(long)]
    board: String,
    /// Cycles each layer's multipliers are reused per output vector (capped at a layer's outputs).
    #[arg(long, default_value_t = 1)]
    reuse_factor: usize,
    /// Layers with a reuse factor of their own, overriding --reuse-factor: e.g. `conv1=4,fc1=16`
    /// (the names `ltvx hw estimate` lists; at most a layer's outputs). Repeatable.
    #[arg(long, value_name = "NAME=N,...", value_delimiter = ',', value_parser = reuse::parse_item)]
    layer_reuse: Vec<(String, usize)>,
}

#[derive(clap::Args)]
struct Export {
    #[command(flatten)]
    target: Target,
    /// Directory to write ltvx_model.cl and ltvx_model.json into (created).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct Verify {
    /// The int8 model the kernel was exported for.
    model: PathBuf,
    /// The directory `ltvx hw export` wrote (its ltvx_model.cl is built from source).
    #[arg(long, required_unless_present = "binary")]
    dir: Option<PathBuf>,
    /// An offline-compiled binary of the export (hw/fpga/Makefile: .aocx, .xclbin) instead.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    binary: Option<PathBuf>,
    /// Synthetic customers to score.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    customers: u32,
    #[command(flatten)]
    device: DeviceArgs,
}

#[derive(clap::Args)]
struct EstimateArgs {
    #[command(flatten)]
    target: Target,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The model, its network, the board and the estimate, refused when the model does not fit.
fn open(t: &Target) -> Result<(Model, Net, Board, Estimate)> {
    let board = Board::find(&t.board, &boards_dir())?;
    let model = Model::open(&t.model)?;
    let reuse = Reuse { all: t.reuse_factor, layers: t.layer_reuse.clone() };
    let (net, estimate) = checked(&model, &reuse, &board)?;
    Ok((model, net, board, estimate))
}

pub fn run(a: Args) -> Result<ExitCode> {
    match a.command {
        Command::Export(e) => {
            let (model, net, board, estimate) = open(&e.target)?;
            let [src, cfg] = export::write(&e.out, &model, &net, &board)?;
            super::with_stdout(|w| {
                writeln!(w, "wrote {} and {}", src.display(), cfg.display())?;
                writeln!(
                    w,
                    "{}: estimated {} DSPs, {} {}, {:.2} µs per customer at {} MHz; streamed (STREAM=1) {:.0} customers/s (ltvx hw estimate for the detail)",
                    board.name,
                    estimate.dsp,
                    estimate.ram_blocks,
                    board.ram_name,
                    estimate.latency_us(),
                    board.clock_mhz,
                    estimate.stream_customers_per_s()
                )
            })?;
        }
        Command::Verify(v) => {
            let model = Model::open(&v.model)?;
            let (file, source) = match (&v.dir, &v.binary) {
                (_, Some(binary)) => (binary.clone(), None),
                (Some(dir), None) => {
                    let file = dir.join(export::SOURCE_FILE);
                    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                    (file, Some(text))
                }
                (None, None) => unreachable!("clap requires --dir or --binary"),
            };
            // Reuse groups change the schedule, never a head value: any factor checks the outputs.
            let net = Net::of(&model, &Reuse::uniform(1))?;
            let opencl = |reason: String| Error::Backend { backend: "opencl".into(), reason };
            let rt = v.device.opencl().pick().and_then(Runtime::open).map_err(opencl)?;
            let batch = synthetic::customers(model.graph().inputs, v.customers as usize, 1);
            let what = file.display().to_string();
            let kernel = match &source {
                Some(text) => verify::Kernel::Source(text),
                None => verify::Kernel::Binary(&file),
            };
            let got = verify::run(&rt, &what, kernel, &model, &net, &batch).map_err(opencl)?;
            let want = verify::reference(&model, &batch).map_err(opencl)?;
            if let Some(d) = verify::first_difference(&net, &got, &want) {
                return Err(opencl(format!("{what} differs from the reference on {}: {d}", rt.label)));
            }
            super::with_stdout(|w| {
                writeln!(w, "{what} on {}: {} customers bit-identical to the reference", rt.label, v.customers)
            })?;
        }
        Command::Estimate(e) => {
            let (_, _, board, estimate) = open(&e.target)?;
            if e.json {
                super::print_json(&estimate.to_json(&board))?;
            } else {
                super::with_stdout(|w| write_text(w, &estimate, &board))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_text(w: &mut dyn Write, e: &Estimate, b: &Board) -> std::io::Result<()> {
    writeln!(
        w,
        "{} ({}): {} DSPs x {} int8 multiplies, {} {} blocks, {} MHz (profile {})",
        b.name,
        b.part,
        b.dsp,
        b.int8_per_dsp,
        b.ram_blocks,
        b.ram_name,
        b.clock_mhz,
        b.file.display()
    )?;
    writeln!(
        w,
        "{:<14} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8}",
        "layer", "reuse", "weights", "nonzero", "mults", "DSP", b.ram_name, "II", "latency"
    )?;
    for l in &e.layers {
        writeln!(
            w,
            "{:<14} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8}",
            l.name, l.reuse, l.weights, l.nonzero, l.multipliers, l.dsp, l.ram_blocks, l.interval, l.latency
        )?;
    }
    writeln!(
        w,
        "{:<14} {:>6} {:>8} {:>8} {:>6} {:>6} {:>8} {:>8} {:>8}",
        "pool, copies", "", "", "", "", e.other_dsp, "", "", e.other_cycles
    )?;
    writeln!(
        w,
        "total          {} DSPs ({:.1}%), {} {} ({:.1}%); {} cycles = {:.2} µs per customer; {:.0} customers/s; binds: {}",
        e.dsp,
        e.dsp as f64 * 100.0 / b.dsp as f64,
        e.ram_blocks,
        b.ram_name,
        e.ram_blocks as f64 * 100.0 / b.ram_blocks as f64,
        e.latency_cycles,
        e.latency_us(),
        e.customers_per_s(),
        e.binding(b)
    )?;
    writeln!(w, "{:<24} {:>8}", "streaming stage", "cycles")?;
    for st in &e.stages {
        writeln!(w, "{:<24} {:>8}", st.kernel, st.cycles)?;
    }
    writeln!(
        w,
        "streaming      {} kernels (-D{STREAM}): II {} cycles (slowest: {}) = {:.0} customers/s; latency {} cycles = {:.2} µs; channels +{} {}",
        e.stages.len(),
        e.slowest_stage().cycles,
        e.slowest_stage().kernel,
        e.stream_customers_per_s(),
        e.stream_latency_cycles,
        e.stream_latency_cycles as f64 / e.clock_mhz,
        e.channel_ram_blocks,
        b.ram_name
    )?;
    writeln!(
        w,
        "an estimate from the network and the profile, not synthesis (hw/fpga/README.md: the model and its limits)"
    )
}
