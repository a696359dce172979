//! The options that choose a device, and for scoring the OpenCL program that runs on it, shared by
//! every subcommand that picks a backend.

use std::path::PathBuf;

use ltvx::backend::opencl::{KernelForm, Selection};

/// Which device: what `ltvx devices` shows and `--backend opencl` or `--backend cuda` takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// Device: its index in `ltvx devices` (OpenCL: default the first of the platform; CUDA: the GPU,
    /// default 0).
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
    /// OpenCL platform: a case-insensitive part of its name (e.g. pocl).
    #[arg(long, value_name = "NAME")]
    pub opencl_platform: Option<String>,
}

impl DeviceArgs {
    pub fn opencl(&self) -> Selection {
        Selection { device: self.device, platform: self.opencl_platform.clone(), ..Selection::default() }
    }
}

/// The device, and the OpenCL program scoring runs on it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OpenclArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// An offline-compiled OpenCL program (an FPGA's .aocx or .xclbin, built with
    /// -DLTVX_MODEL_HASH for this model) instead of kernels/opencl built at run time; give the form it
    /// was compiled from with --opencl-kernels.
    #[arg(long, value_name = "FILE")]
    pub fpga_binary: Option<PathBuf>,
    /// OpenCL int8 kernels: ndrange (one work-item per value) or single-work-item (the FPGA form).
    #[arg(long, value_name = "FORM", default_value = "ndrange")]
    pub opencl_kernels: KernelForm,
}

impl OpenclArgs {
    pub fn opencl(&self) -> Selection {
        Selection { binary: self.fpga_binary.clone(), form: self.opencl_kernels, ..self.device.opencl() }
    }
}
