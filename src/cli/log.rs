//! Logs and progress go to stderr, so that stdout carries only results. `--quiet` keeps warnings and
//! errors only; `--verbose` adds detail.

use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(1);

#[derive(Clone, Copy)]
pub enum Level {
    Info = 1,
}

/// Whether messages of `level` are shown (e.g. to skip drawing a progress bar under --quiet).
pub fn enabled(level: Level) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level as u8
}

pub fn set_level(quiet: bool, verbose: bool) {
    LEVEL.store(
        if quiet {
            0
        } else if verbose {
            2
        } else {
            1
        },
        Ordering::Relaxed,
    );
}

pub fn warn(msg: &str) {
    eprintln!("ltvx: {msg}");
}

pub fn info(msg: &str) {
    if LEVEL.load(Ordering::Relaxed) >= 1 {
        eprintln!("ltvx: {msg}");
    }
}

pub fn debug(msg: &str) {
    if LEVEL.load(Ordering::Relaxed) >= 2 {
        eprintln!("ltvx: {msg}");
    }
}
