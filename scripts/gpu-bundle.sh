#!/usr/bin/env bash
# Builds the bundle scripts/gpu-check.sh runs on a GPU host that has no Rust toolchain: the release
# `ltvx` and the `conformance` and `cuda_kernels` test binaries, stripped, in gpu-bundle/ (or $1).
# glibc Linux x86-64, as the GPU host; cudarc loads libcuda and libnvrtc at run time, so nothing
# CUDA is needed here. Carry the folder with the repository's scripts/ (e.g. the device tool's
# `carry: ["gpu-bundle"]`), then run `scripts/gpu-check.sh OUTDIR` there.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-gpu-bundle}
mkdir -p "$bundle"
cargo build --release --locked
install -D target/release/ltvx "$bundle/ltvx"
cargo test --release --locked --no-run --message-format=json --test conformance --test cuda_kernels |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])' |
    while read -r name exe; do install -D "$exe" "$bundle/$name"; done
strip "$bundle/ltvx" "$bundle/conformance" "$bundle/cuda_kernels"
du -sh "$bundle"/*
