//! The FPGA path beyond the runtime backend: a model's int8 network as fixed hardware layers
//! ([`net`]) at per-layer reuse factors ([`reuse`]), FPGA kernel source generated with the weights
//! baked in ([`export`], `ltvx hw export`), board profiles (`hw/fpga/boards/*.toml`, [`board`]) and
//! resource and latency estimates on them ([`estimate`], `ltvx hw estimate`).

pub mod board;
pub mod estimate;
pub mod export;
pub mod net;
pub mod reuse;
pub mod verify;
