//! The FPGA path beyond the runtime backend: a model's int8 network as fixed hardware layers
//! ([`net`]) at per-layer reuse factors ([`reuse`]), cut into pipeline stages ([`stages`]); FPGA
//! kernel source generated with the weights baked in ([`export`], `ltvx hw export`), each stage
//! written once ([`stage_cl`]) and run by one task or streamed through channels; board profiles
//! (`hw/fpga/boards/*.toml`, [`board`]) and resource and latency estimates on them ([`estimate`],
//! `ltvx hw estimate`); an export run against the reference ([`verify`], `ltvx hw verify`).

pub mod board;
pub mod estimate;
pub mod export;
pub mod net;
pub mod reuse;
pub mod stage_cl;
pub mod stages;
pub mod verify;
