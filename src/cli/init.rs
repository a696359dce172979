//! `ltvx init`: a model with random He-normal weights from a preset.

use std::path::PathBuf;
use std::process::ExitCode;

use ltvx::Result;
use ltvx::model::block_prune::BlockShape;
use ltvx::model::init::{InitOptions, init};
use ltvx::model::{InputSizes, Precision, Preset};

#[derive(clap::Args)]
pub struct Args {
    /// Architecture: tiny (<20k MACs), base (value model v1, 517,760 MACs) or large (>50× base).
    #[arg(long, default_value = "base")]
    preset: Preset,
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    precision: Precision,
    /// Same seed, same weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of each layer's weights zeroed by magnitude, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    sparsity: f64,
    /// Prune whole blocks of ROWSxCOLS (output channels × reduction elements, in the CPU kernels'
    /// order) instead of single weights. The VNNI kernels skip 16x4 blocks, and 32x4 best (two
    /// 16-channel strips share each group).
    #[arg(long)]
    block: Option<BlockShape>,
    /// Sequence channels C (default: the preset's).
    #[arg(long)]
    seq_channels: Option<usize>,
    /// Weeks T in the sequence (default: the preset's).
    #[arg(long)]
    weeks: Option<usize>,
    /// Static features F (default: the preset's).
    #[arg(long)]
    static_features: Option<usize>,
    /// The model file to write (atomically).
    #[arg(long)]
    out: PathBuf,
}

pub fn parse_precision(s: &str) -> std::result::Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "fp16" => Ok(Precision::Fp16),
        "int8" => Ok(Precision::Int8),
        _ => Err(format!("unknown precision {s:?} (expected fp32, fp16 or int8)")),
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let d = a.preset.default_inputs();
    let inputs = InputSizes {
        seq_channels: a.seq_channels.unwrap_or(d.seq_channels),
        seq_len: a.weeks.unwrap_or(d.seq_len),
        static_features: a.static_features.unwrap_or(d.static_features),
    };
    let opts = InitOptions {
        preset: a.preset,
        precision: a.precision,
        seed: a.seed,
        sparsity: a.sparsity,
        inputs: Some(inputs),
        block: a.block,
    };
    let file = init(&opts)?;
    super::check_interrupt()?;
    file.save(&a.out)?;
    let model = ltvx::Model::open(&a.out)?;
    super::log::info(&format!(
        "wrote {}: {} {}, {} MACs and {} parameters per customer",
        a.out.display(),
        a.preset,
        model.precision(),
        model.macs(),
        model.parameters()
    ));
    Ok(ExitCode::SUCCESS)
}
