//! The options that choose a device, shared by every subcommand that picks a backend.

use ltvx::backend::opencl::Selection;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// OpenCL device: its index in `ltvx devices` (default: the first of the platform).
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
    /// OpenCL platform: a case-insensitive part of its name (e.g. pocl).
    #[arg(long, value_name = "NAME")]
    pub opencl_platform: Option<String>,
}

impl DeviceArgs {
    pub fn opencl(&self) -> Selection {
        Selection { device: self.device, platform: self.opencl_platform.clone() }
    }
}
