//! `ltvx info`: a model's graph, shapes, sizes, precision per layer, sparsity and metadata.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ltvx::model::graph::describe;
use ltvx::model::summary::summary;
use ltvx::{Model, Result};

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    model: PathBuf,
    /// Machine-readable JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let model = Model::open(&a.model)?;
    let mut s = summary(&model);
    s["cpu_executed_macs_per_customer"] = cpu_executed_macs(&model).map_or(serde_json::Value::Null, Into::into);
    if a.json {
        super::print_json(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::with_stdout(|w| write_text(w, &a.model, &model, &s))?;
    Ok(ExitCode::SUCCESS)
}

/// Multiply-adds per customer the CPU backend runs for this model here (`None` where it cannot run it).
fn cpu_executed_macs(model: &Model) -> Option<u64> {
    use ltvx::backend::{BackendChoice, BackendKind, Options};
    ltvx::engine::Engine::build_with(model, BackendChoice::Kind(BackendKind::Cpu), &Options::default())
        .ok()?
        .executed_macs()
}

fn write_text(w: &mut dyn Write, path: &Path, model: &Model, s: &serde_json::Value) -> std::io::Result<()> {
    let g = model.graph();
    writeln!(w, "model      {} ({})", path.display(), s["name"].as_str().unwrap_or(""))?;
    writeln!(
        w,
        "format     ltvx v{}, {} bytes, hash {}",
        s["format_version"],
        s["bytes"],
        s["hash"].as_str().unwrap_or("")
    )?;
    writeln!(w, "precision  {}", model.precision())?;
    writeln!(
        w,
        "inputs     seq [C={}, T={}], static [F={}]",
        g.inputs.seq_channels, g.inputs.seq_len, g.inputs.static_features
    )?;
    writeln!(w, "outputs    ltv (zero-inflated lognormal), churn, segment (K={})", s["segments"])?;
    writeln!(
        w,
        "size       {} MACs and {} parameters per customer; sparsity {:.1}%",
        model.macs(),
        model.parameters(),
        100.0 * s["sparsity"].as_f64().unwrap_or(0.0)
    )?;
    writeln!(w, "\ngraph")?;
    for line in describe(g, &model.shapes) {
        writeln!(w, "  {line}")?;
    }
    if let Some(executed) = s["cpu_executed_macs_per_customer"].as_u64().filter(|&e| e < model.macs()) {
        writeln!(
            w,
            "cpu        the {} kernels execute {executed} MACs per customer ({:.1}% of them): all-zero 16×4 weight groups are skipped",
            ltvx::backend::cpu::Isa::best(),
            100.0 * executed as f64 / model.macs().max(1) as f64
        )?;
    }
    let skippable = s["skippable_macs_per_customer"].as_u64().unwrap_or(0);
    if skippable > 0 {
        writeln!(
            w,
            "pruned     {skippable} of the MACs fall in zero blocks ({:.1}%): a kernel that skips them does {} MACs",
            100.0 * skippable as f64 / model.macs().max(1) as f64,
            model.macs() - skippable
        )?;
    }
    writeln!(
        w,
        "\nlayers     {:<16} {:<9} {:>12} {:>10} {:>9}  {:<14} {:>12}  stored",
        "name", "precision", "MACs", "params", "sparsity", "pattern", "skippable"
    )?;
    for l in s["layers"].as_array().into_iter().flatten() {
        let p = &l["pruning"];
        writeln!(
            w,
            "           {:<16} {:<9} {:>12} {:>10} {:>8.1}%  {:<14} {:>12}  {}",
            l["name"].as_str().unwrap_or(""),
            l["precision"].as_str().unwrap_or(""),
            l["macs"].as_u64().unwrap_or(0),
            l["parameters"].as_u64().unwrap_or(0),
            100.0 * l["sparsity"].as_f64().unwrap_or(0.0),
            p["pattern"].as_str().unwrap_or("dense"),
            p["skippable_macs"].as_u64().unwrap_or(0),
            if p["stored_sparse"].as_bool().unwrap_or(false) { "blocks" } else { "dense" }
        )?;
    }
    if let Some(q) = model.quantization() {
        writeln!(w, "\nquantization  {}", q.calibration)?;
        for (t, a) in &q.activations {
            writeln!(w, "  {t:<16} scale {:<12} zero point {}", a.scale, a.zero_point)?;
        }
    }
    for key in ["feature_spec", "provenance", "metrics"] {
        let v = &s[key];
        let text = if v.as_object().is_some_and(|o| o.is_empty()) { "(none)".to_string() } else { v.to_string() };
        writeln!(w, "\n{key:<13} {text}")?;
    }
    Ok(())
}
