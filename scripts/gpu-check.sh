#!/usr/bin/env bash
# One-shot check of the CUDA backend on a GPU host that has the NVIDIA driver and CUDA (12 or 13) but
# no Rust toolchain and no network: it runs binaries built beforehand on the development machine.
#
#   scripts/gpu-check.sh [OUTDIR]      (default OUTDIR: ./gpu-check-<UTC time>)
#
# Steps, each logged in full under OUTDIR, a line per step in OUTDIR/summary.txt:
#   1. the environment: nvidia-smi, the NVRTC library found, `ltvx devices`;
#   2. the NVRTC compile test (every kernel for sm_80 and sm_90) and the CUDA conformance suite, with
#      LTVX_REQUIRE so that "skipped" is a failure (int8 must be bit-identical to the reference);
#   3. `ltvx bench --backend cuda` on the base and large presets, int8, at batch 1, 256, 4096 and
#      65536, --json into OUTDIR, and a table of customers/s in the summary.
# Exit status 0 only when every step passed.
#
# The bundle: the release `ltvx` and the test binaries, in $LTVX_BUNDLE (default: gpu-bundle/ beside
# this script's folder), built on the development machine (glibc Linux x86-64, as the GPU host; cudarc
# loads libcuda and libnvrtc at run time, so nothing CUDA is needed to build):
#
#   cargo build --release --locked
#   cargo test --release --locked --no-run --message-format=json --test conformance --test cuda_kernels \
#     | python3 -c 'import json, sys
#   for l in sys.stdin:
#       m = json.loads(l)
#       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
#           print(m["target"]["name"], m["executable"])' \
#     | while read -r name exe; do install -D "$exe" "gpu-bundle/$name"; done
#   install -D target/release/ltvx gpu-bundle/ltvx
#   # carry scripts/gpu-check.sh and gpu-bundle/ over, e.g. tar czf ltvx-gpu.tgz scripts/gpu-check.sh gpu-bundle
#
# libnvrtc: cudarc (built for CUDA 12.8) loads libnvrtc.so or libnvrtc.so.12, never libnvrtc.so.13,
# the name CUDA 13 installs. When neither loads, this script looks for a libnvrtc.so.13 (or .so.12) in
# the dynamic linker's cache, /usr/local/cuda*/ and Python's nvidia-cuda-nvrtc wheels (PyTorch brings
# one), and puts a folder holding a link named libnvrtc.so to it, and the library's own folder (for
# its libnvrtc-builtins), on LD_LIBRARY_PATH. $LTVX_NVRTC_LIB
# names the library file to use instead of searching.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bundle=${LTVX_BUNDLE:-$here/../gpu-bundle}
out=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" || { echo "gpu-check: cannot create $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
summary=$out/summary.txt
: >"$summary"
failed=0

say() { echo "$*" | tee -a "$summary"; }
# step NAME LOG COMMAND...: runs COMMAND with its stdout in OUTDIR/LOG and its stderr in
# OUTDIR/LOG.stderr (kept apart so that --json output stays JSON); PASS or FAIL in the summary.
step() {
    local name=$1 log=$2 last
    shift 2
    if "$@" >"$out/$log" 2>"$out/$log.stderr"; then
        say "PASS  $name  ($log)"
    else
        local status=$?
        # The reason: a panic's message, else the last line written.
        last=$(grep -h -A1 -m1 'panicked at' "$out/$log.stderr" | tail -n 1)
        [ -n "$last" ] || last=$(cat "$out/$log.stderr" "$out/$log" | grep . | tail -n 1)
        say "FAIL  $name  (exit $status; $log: $last)"
        failed=1
    fi
}
# Ends the check early: one line why, exit 2.
stop() {
    say "STOP  $*"
    exit 2
}

command -v nvidia-smi >/dev/null || stop "no NVIDIA driver here (nvidia-smi not found)"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || stop "nvidia-smi fails: $(tail -n 1 "$out/nvidia-smi.txt")"
for bin in ltvx conformance cuda_kernels; do
    [ -x "$bundle/$bin" ] || stop "no executable $bundle/$bin (build the bundle as this script's header says)"
done

# A libnvrtc for cudarc: nothing to do when libnvrtc.so or .so.12 already loads.
loads() { python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$1" 2>/dev/null; }
find_nvrtc() {
    [ -n "${LTVX_NVRTC_LIB:-}" ] && { echo "$LTVX_NVRTC_LIB"; return; }
    {
        ldconfig -p 2>/dev/null | awk '/libnvrtc\.so\.1[23] /{print $NF}'
        ls /usr/local/cuda*/lib64/libnvrtc.so.1[23] /usr/local/cuda*/targets/*/lib/libnvrtc.so.1[23] 2>/dev/null
        python3 -c 'import glob, site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    print("\n".join(glob.glob(d + "/nvidia/cu*/lib/libnvrtc.so.1[23]") + glob.glob(d + "/nvidia/cuda_nvrtc/lib/libnvrtc.so.1[23]")))' 2>/dev/null
    } | grep . | head -n 1
}
if [ -z "${LTVX_NVRTC_LIB:-}" ] && { loads libnvrtc.so || loads libnvrtc.so.12; }; then
    say "NVRTC: libnvrtc.so / libnvrtc.so.12 loads as it is"
else
    lib=$(find_nvrtc)
    [ -n "$lib" ] && [ -e "$lib" ] || stop "no libnvrtc found (install CUDA's NVRTC, or set LTVX_NVRTC_LIB=/path/to/libnvrtc.so.13)"
    real=$(readlink -f "$lib")
    mkdir -p "$out/nvrtc"
    ln -sf "$real" "$out/nvrtc/libnvrtc.so"
    # The library's own folder too: libnvrtc loads its libnvrtc-builtins.so.<version> by name.
    export LD_LIBRARY_PATH="$out/nvrtc:$(dirname "$real")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "NVRTC: $lib, linked as $out/nvrtc/libnvrtc.so"
fi
say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"

step "ltvx devices" devices.txt "$bundle/ltvx" devices
step "NVRTC compiles every kernel (sm_80, sm_90)" cuda_kernels.log \
    env LTVX_REQUIRE=nvrtc "$bundle/cuda_kernels" --nocapture
step "CUDA conformance (int8 bit-exact, float within tolerance)" conformance.log \
    env LTVX_REQUIRE=cuda "$bundle/conformance" cuda_conforms --nocapture

for preset in base large; do
    # --threads 1: host threads do not apply to the GPU; 2 s a configuration keeps the whole check
    # within a few minutes.
    step "bench cuda $preset int8" "bench-$preset-int8.json" \
        timeout 240 "$bundle/ltvx" bench --backend cuda --preset "$preset" --precision int8 \
        --batch 1,256,4096,65536 --threads 1 --duration 2 --json
done

# The table; a preset without a CUDA row (the backend was skipped) fails the check.
python3 - "$out" >>"$summary" 2>&1 <<'EOF' || { say "FAIL  bench table: a preset has no CUDA measurement"; failed=1; }
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
missing = False
print(f"\n{'preset':8} {'batch':>7} {'customers/s':>14} {'p50 us':>10}  plan")
for preset in ("base", "large"):
    path = out / f"bench-{preset}-int8.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"{preset:8} no report ({path.name}: {e})")
        missing = True
        continue
    missing |= not any(row["backend"] == "cuda" for row in report.get("rows", []))
    for row in report.get("rows", []):
        print(f"{preset:8} {row['batch']:>7} {row['customers_per_s']:>14.0f} {row['latency']['p50_us']:>10.1f}  {row['plan']}")
    for s in report.get("skipped", []):
        print(f"{preset:8} skipped {s['backend']}: {s['reason']}")
sys.exit(1 if missing else 0)
EOF
echo "gpu-check: logs and summary in $out"
exit "$failed"
