//! Command-line parsing and dispatch; each subcommand lives in its own module.

mod bench;
mod compress;
mod demo;
mod device_args;
mod devices;
pub mod eval;
mod hw;
mod info;
pub mod init;
pub mod log;
mod log_args;
pub mod score;
mod serve;
mod train;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use ltvx::Result;

#[derive(Parser)]
#[command(name = "ltvx", version, about = "Customer-value models (LTV, churn, segment): build, inspect, score", long_about = None)]
pub struct Cli {
    /// Only warnings and errors on stderr.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Time the engine here (customers/s, latency, multiply-adds/s, share of peak, per backend), or
    /// load a running scoring server (--server URL).
    Bench(bench::Args),
    /// The main job on the bundled CDNOW log: train, evaluate beside BG/NBD, chart, score, report.
    Demo(demo::Args),
    /// Compress a float model: prune (with fine-tuning), then int8 (calibrated) or fp16.
    Compress(compress::Args),
    /// A trained model's metrics on a transaction log, beside the BG/NBD + Gamma-Gamma baseline.
    Eval(eval::Args),
    /// Create a model with random weights from an architecture preset.
    Init(init::Args),
    /// The FPGA path: export kernel source with the weights baked in, estimate resources on a board.
    Hw(hw::Args),
    /// Show a model's graph, shapes, sizes, precision, sparsity and metadata.
    Info(info::Args),
    /// Score customers from a JSON Lines feature file.
    Score(score::Args),
    /// Serve a model over HTTP: dynamic batching, JSON and binary scoring, metrics, hot reload.
    Serve(serve::Args),
    /// Train a value model on a transaction log.
    Train(train::Args),
    /// List backends and the devices they found, or why they are unavailable.
    Devices(devices::Args),
}

/// Plan options with `threads` (default: every hardware thread) for the commands that score.
pub fn engine_options(threads: Option<u64>) -> ltvx::backend::Options {
    let threads = threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    ltvx::backend::Options { threads, ..Default::default() }
}

pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Bench(a) => bench::run(a),
        Command::Compress(a) => compress::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Init(a) => init::run(a),
        Command::Hw(a) => hw::run(a),
        Command::Info(a) => info::run(a),
        Command::Score(a) => score::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Devices(a) => devices::run(a),
        Command::Train(a) => train::run(a),
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C asks long loops to stop at the next batch (leaving no half-written output); a second
/// Ctrl-C exits at once. Panics — bugs, never bad input — print one line, not a backtrace.
pub fn install_handlers() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            ltvx::atomic_file::remove_in_progress();
            std::process::exit(130);
        }
    });
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ltvx: internal error (please report): {info}");
    }));
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) { Err(ltvx::Error::Interrupted) } else { Ok(()) }
}

/// Help and version go to stdout as clap prints them; a usage mistake is one `ltvx: error:` line
/// (exit 2), like every other failure.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The message is clap's first paragraph (a missing argument is named on the lines after the
    // first), folded into one line; the usage and help hints that follow it are left out.
    let text = e.render().to_string();
    let message: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let message = message.join(" ");
    let message = if message.is_empty() { "invalid arguments" } else { message.trim_start_matches("error: ") };
    eprintln!("ltvx: error: {message} (see ltvx --help)");
    ExitCode::from(2)
}

/// Writes results to stdout. A reader that went away (`ltvx info m.ltvx | head`) ends the output
/// quietly, as with other command-line tools.
pub fn with_stdout(fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    match fill(&mut w).and_then(|()| w.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ltvx::Error::io("<stdout>", e)),
        _ => Ok(()),
    }
}

/// Writes a JSON document as the only thing on stdout.
pub fn print_json(value: &serde_json::Value) -> Result<()> {
    with_stdout(|w| writeln!(w, "{}", serde_json::to_string_pretty(value).expect("JSON values serialize")))
}
