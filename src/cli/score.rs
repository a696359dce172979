//! `ltvx score`: customers' scores, in batches, keeping input order — from a JSON Lines feature file
//! (bad lines are reported with their line number and skipped; the valid ones are still scored) or
//! from a transaction log (and the side data the model was trained with), with features built by the
//! model's own FeatureSpec.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ltvx::backend::BackendChoice;
use ltvx::data::feature_spec::Featurizer;
use ltvx::data::features::{FeatureRow, parse_line};
use ltvx::data::ingest::parse_day;
use ltvx::data::labels::eligible;
use ltvx::data::transactions::Transactions;
use ltvx::engine::scores::JsonF32;
use ltvx::engine::{Batch, Engine, Scores};
use ltvx::eval::evaluate::feature_spec;
use ltvx::{Error, Model, Result};

use super::device_args::OpenclArgs;
use super::log;
use super::log_args::LogArgs;

/// Longest accepted line; longer ones are rejected without being held in memory.
const MAX_LINE_BYTES: u64 = 16 << 20;
/// Rejected lines reported one by one before only counting.
const MAX_REPORTED: usize = 20;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Csv,
    Jsonl,
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["features", "transactions"]))]
pub struct Args {
    /// The model file.
    model: PathBuf,
    /// JSON Lines: {"customer_id": "…", "seq": [[T numbers] × C], "static": [F numbers]}; `-` is stdin.
    #[arg(long)]
    features: Option<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    /// With --transactions: features as of this day (YYYY-MM-DD; default: the model's cutoff).
    #[arg(long)]
    as_of: Option<String>,
    /// auto, reference, cpu, cuda or opencl.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    #[command(flatten)]
    device: OpenclArgs,
    /// Write here (atomically) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Exit non-zero when any line was rejected.
    #[arg(long)]
    strict: bool,
    /// Threads each batch is split across (cpu backend; default: every hardware thread).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Customers per engine call.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    batch_size: u64,
}

struct Tally {
    scored: usize,
    rejected: usize,
}

/// Where scores go: the header is written with the first rows, so a run that scores nobody writes
/// nothing.
struct Output<'a> {
    out: &'a mut dyn Write,
    format: Format,
    segments: usize,
    started: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = Model::open(&a.model)?;
    let options = ltvx::backend::Options { opencl: a.device.opencl(), ..super::engine_options(a.threads) };
    let engine = Engine::build_with(&model, a.backend, &options)?;
    log::debug(&format!("backend: {}", engine.describe()));
    let start = Instant::now();
    let mut tally = Tally { scored: 0, rejected: 0 };
    let batch_size = a.batch_size as usize;
    let source = match &a.features {
        // A feature file holds the network's inputs already: what builds them from a log has no place.
        Some(_) if a.as_of.is_some() || a.log.has_side_data() => {
            return Err(Error::Input(
                "--as-of, --attributes and --events build features from --transactions; --features holds them already"
                    .into(),
            ));
        }
        Some(path) => {
            let source = path.display().to_string();
            let input: Box<dyn Read> = if source == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(File::open(path).map_err(|e| Error::io(path, e))?)
            };
            emit(a.out.as_deref(), |w| {
                score_stream(&engine, BufReader::new(input), &source, a.format, batch_size, w, &mut tally)
            })?;
            source
        }
        None => {
            let spec = feature_spec(&model)?;
            let log_data = a.log.require()?;
            spec.check_log(&a.log.shape(&log_data))?;
            let side = a.log.side_data()?;
            let featurizer = spec.featurizer(&side)?;
            let as_of = match &a.as_of {
                Some(day) => {
                    let as_of = parse_day(day, None).map_err(|e| Error::Input(format!("--as-of: {e}")))?;
                    if as_of != spec.cutoff_day()? {
                        log::warn(&format!(
                            "features as of {day}, the model was trained at {}: values beyond the training range \
                             are clipped to it, and predictions are for the model's horizon from {day}",
                            spec.cutoff
                        ));
                    }
                    as_of
                }
                None => spec.cutoff_day()?,
            };
            emit(a.out.as_deref(), |w| {
                score_log(&engine, &featurizer, &log_data, as_of, a.format, batch_size, w, &mut tally)
            })?;
            a.log.transactions.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
        }
    };
    let secs = start.elapsed().as_secs_f64();
    log::info(&format!(
        "scored {} customers, rejected {} {} ({source}; {}; {:.2} s, {:.0} customers/s including parsing and output)",
        tally.scored,
        tally.rejected,
        if a.features.is_some() { "lines" } else { "customers" },
        engine.describe(),
        secs,
        tally.scored as f64 / secs.max(1e-9)
    ));
    Ok(if a.strict && tally.rejected > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Runs `fill` on the output: a file written atomically, or stdout, where a reader that went away
/// ends the output quietly and every other error surfaces.
fn emit(out: Option<&std::path::Path>, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if let Some(path) = out {
        return ltvx::atomic_file::write_with(path, fill);
    }
    let mut result = Ok(());
    super::with_stdout(|w| {
        result = fill(w);
        Ok(())
    })?;
    match result {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Scores every customer of a log who bought on or before `as_of`; the others are reported.
#[allow(clippy::too_many_arguments)]
fn score_log(
    engine: &Engine,
    featurizer: &Featurizer<'_>,
    log_data: &Transactions,
    as_of: i32,
    format: Format,
    batch_size: usize,
    out: &mut dyn Write,
    tally: &mut Tally,
) -> Result<()> {
    let customers = eligible(log_data, as_of);
    tally.rejected = log_data.len() - customers.len();
    if tally.rejected > 0 {
        log::warn(&format!("{} customers have no purchase on or before the as-of day: skipped", tally.rejected));
    }
    featurizer.notes(&customers).iter().for_each(|note| log::warn(note));
    let mut out = Output { out, format, segments: engine.segments(), started: false };
    for chunk in customers.chunks(batch_size) {
        let mut batch = featurizer.batch_as_of(chunk, as_of)?;
        let mut ids: Vec<String> = chunk.iter().map(|c| c.id.to_string()).collect();
        flush(engine, &mut batch, &mut ids, &mut out, tally)?;
    }
    if tally.scored == 0 {
        return Err(Error::Input("no customer bought anything on or before the as-of day".into()));
    }
    Ok(())
}

fn score_stream(
    engine: &Engine,
    mut input: impl BufRead,
    source: &str,
    format: Format,
    batch_size: usize,
    out: &mut dyn Write,
    tally: &mut Tally,
) -> Result<()> {
    let sizes = engine.input_sizes();
    let mut out = Output { out, format, segments: engine.segments(), started: false };
    let mut ids = Vec::with_capacity(batch_size);
    let mut batch = Batch::with_capacity(sizes, batch_size);
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let n = (&mut input).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).map_err(|e| Error::io(source, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        super::check_interrupt()?;
        let parsed = if line.len() as u64 > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            skip_rest_of_line(&mut input).map_err(|e| Error::io(source, e))?;
            Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line(text, sizes),
                Err(_) => Err("not valid UTF-8".into()),
            }
        };
        match parsed {
            Ok(FeatureRow { customer_id, seq, stat }) => {
                batch.push(&seq, &stat)?;
                ids.push(customer_id);
            }
            Err(reason) => {
                tally.rejected += 1;
                if tally.rejected <= MAX_REPORTED {
                    log::warn(&format!("{source}:{number}: {reason}"));
                } else if tally.rejected == MAX_REPORTED + 1 {
                    log::warn("further rejected lines are counted but not listed");
                }
            }
        }
        if batch.len() == batch_size {
            flush(engine, &mut batch, &mut ids, &mut out, tally)?;
        }
    }
    flush(engine, &mut batch, &mut ids, &mut out, tally)?;
    if tally.scored == 0 {
        return Err(Error::Input(format!("{source}: no customer could be scored ({} lines rejected)", tally.rejected)));
    }
    Ok(())
}

fn skip_rest_of_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

fn flush(engine: &Engine, batch: &mut Batch, ids: &mut Vec<String>, out: &mut Output, tally: &mut Tally) -> Result<()> {
    super::check_interrupt()?;
    if batch.is_empty() {
        return Ok(());
    }
    let scores = engine.score(batch)?;
    let io = |e: std::io::Error| Error::io("<output>", e);
    if !out.started {
        write_header(out.out, out.format, out.segments).map_err(io)?;
        out.started = true;
    }
    write_rows(out.out, out.format, ids, &scores).map_err(io)?;
    tally.scored += ids.len();
    batch.clear();
    ids.clear();
    Ok(())
}

/// Writes scores of `ids` as a CSV file (atomically), as `ltvx score` would.
pub fn write_csv(path: &std::path::Path, ids: &[String], scores: &Scores) -> Result<()> {
    ltvx::atomic_file::write(path, |w| {
        write_header(w, Format::Csv, scores.segments)?;
        write_rows(w, Format::Csv, ids, scores)
    })
}

fn write_header(out: &mut dyn Write, format: Format, segments: usize) -> std::io::Result<()> {
    if format == Format::Csv {
        write!(out, "customer_id,ltv,p_purchase,churn_probability,segment")?;
        for k in 0..segments {
            write!(out, ",p_segment_{k}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn write_rows(out: &mut dyn Write, format: Format, ids: &[String], s: &Scores) -> std::io::Result<()> {
    for (i, id) in ids.iter().enumerate() {
        match format {
            Format::Csv => {
                let (ltv, p, churn) = (s.ltv[i], s.p_purchase[i], s.churn_probability[i]);
                write!(out, "{},{},{},{},{}", csv_field(id), csv_f32(ltv), csv_f32(p), csv_f32(churn), s.segment[i])?;
                for &p in s.p_segment_row(i) {
                    write!(out, ",{}", csv_f32(p))?;
                }
                writeln!(out)?;
            }
            Format::Jsonl => {
                let id = serde_json::Value::from(id.as_str());
                write!(
                    out,
                    "{{\"customer_id\":{id},\"ltv\":{},\"p_purchase\":{},",
                    JsonF32(s.ltv[i]),
                    JsonF32(s.p_purchase[i])
                )?;
                write!(out, "\"churn_probability\":{},\"segment\":{}", JsonF32(s.churn_probability[i]), s.segment[i])?;
                for (k, p) in s.p_segment_row(i).iter().enumerate() {
                    write!(out, ",\"p_segment_{k}\":{}", JsonF32(*p))?;
                }
                writeln!(out, "}}")?;
            }
        }
    }
    Ok(())
}

/// An f32 in its shortest round-trip form, an empty field when not finite (as JSON's `null`).
fn csv_f32(x: f32) -> String {
    if x.is_finite() { x.to_string() } else { String::new() }
}

/// Quotes a CSV field when it holds a separator, quote or line break (RFC 4180).
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")).into() } else { s.into() }
}
