//! Running the `ltvx` binary as a user would, with the checks every command-line test wants.

use std::process::{Command, Output};

/// Runs ltvx; whatever the outcome, it must not be a panic.
pub fn ltvx(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ltvx")).args(args).output().expect("run ltvx");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("internal error"), "{args:?}:\n{stderr}");
    out
}

/// Runs ltvx, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = ltvx(args);
    assert!(out.status.success(), "{args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
