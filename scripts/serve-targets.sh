#!/usr/bin/env bash
# The scoring server's targets in one run (docs/PERF.md "Server"): the base preset int8 on the CPU
# backend, served on loopback and loaded by `ltvx bench --server` on the same machine. Each load run
# also measures the served file in process (batch 64, one thread) before and after the load, so
# every ratio compares figures from the same run.
#
#   scripts/serve-targets.sh [OUTDIR]        (a release build first: cargo build --release)
#
# Runs, in order: JSON maximum, binary maximum, Poisson load at 70% of the JSON maximum, a 60 s soak
# with 64 connections, and 2x the JSON maximum offered to a server whose queue holds 256 customers.
# Writes each run's JSON report and the servers' logs to OUTDIR and prints a summary.
set -euo pipefail

LTVX=${LTVX:-target/release/ltvx}
OUT=${1:-serve-targets}
PORT=${PORT:-18188}
mkdir -p "$OUT"
MODEL="$OUT/base8.ltvx"
URL="http://127.0.0.1:$PORT"
"$LTVX" -q init --preset base --precision int8 --seed 1 --out "$MODEL"

SERVER=
start_server() {
    "$LTVX" serve "$MODEL" --listen "127.0.0.1:$PORT" --backend cpu "$@" 2>>"$OUT/server.log" &
    SERVER=$!
    for _ in $(seq 100); do
        curl -sf "$URL/health/ready" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "the server did not become ready (see $OUT/server.log)" >&2
    exit 1
}
stop_server() {
    kill -TERM "$SERVER" && wait "$SERVER" || true
}
trap 'kill $SERVER 2>/dev/null || true' EXIT

# Runs one load; $1 names the report, the rest are `ltvx bench` flags.
load() {
    local name=$1
    shift
    "$LTVX" bench --server "$URL" --model "$MODEL" --backend cpu --json "$@" >"$OUT/$name.json"
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/$1.json" "$2"; }

start_server
load json-max --scenario offline --connections 16 --duration 15
load binary-max --scenario offline --connections 4 --duration 15 --binary
JSON_RPS=$(field json-max requests_per_second)
load poisson-70 --scenario server --qps "$(python3 -c "print(round(0.7 * $JSON_RPS, 1))")" --connections 64 --duration 30
load soak --scenario offline --connections 64 --duration 60
stop_server

start_server --queue-capacity 256
load overload-2x --scenario server --qps "$(python3 -c "print(round(2 * $JSON_RPS, 1))")" --connections 64 --duration 30
stop_server

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
print(f"{'run':<12} {'customers/s':>12} {'in process':>11} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}  errors; server RSS")
for name in ["json-max", "binary-max", "poisson-70", "soak", "overload-2x"]:
    r = json.load(open(f"{out}/{name}.json"))
    l = r["latency_ms"]
    rss = r.get("server_rss_bytes")
    rss = f"{rss[0] / 1e6:.1f} -> {rss[1] / 1e6:.1f} MB ({(rss[1] / rss[0] - 1) * 100:+.1f}%)" if rss else "-"
    errors = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    refused = r.get("refused_latency_ms")
    if refused:
        errors += f" (refusals p50 {refused['p50']:.1f} ms, p99 {refused['p99']:.1f} ms)"
    print(f"{name:<12} {r['customers_per_second']:>12,.0f} {r['in_process_customers_per_second']:>11,.0f} "
          f"{r['ratio'] * 100:>5.0f}% {l['p50']:>8.2f} {l['p99']:>8.2f} {l['p999']:>9.2f}  {errors}; {rss}")
EOF
