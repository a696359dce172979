#!/usr/bin/env python3
"""ltvx against ONNX Runtime on value model v1 (the base preset), alternating in one run.

Each round times every configuration on both engines back to back (ltvx through `ltvx bench --json`,
ONNX Runtime through the peer harness in ../shared/peer), so the ratio of the two medians is taken
under the same machine load. The reported ratio is the median over rounds.

    bash ../shared/peer/setup.sh                      # once: venv with pinned onnxruntime in /tmp/peer
    /tmp/peer/venv/bin/python scripts/bench-vs-ort.py --ltvx target/release/ltvx [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
from pathlib import Path

PEER = Path(__file__).resolve().parent.parent.parent / "shared" / "peer"


def ltvx_rate(binary: str, precision: str, batch: int, threads: int, duration: float, extra: list[str]) -> dict:
    cmd = [binary, "-q", "bench", "--precision", precision, "--batch", str(batch), "--threads", str(threads),
           "--duration", str(duration), "--json", *extra]
    row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["rows"][0]
    return {"cust_per_s": row["customers_per_s"], "p50_us": row["latency"]["p50_us"]}


def ort_rate(bo, sessions, data, batch: int) -> dict:
    """One session: its own 1-thread run. Two sessions: each scores half the batch on its own thread
    (ONNX Runtime's best 2-core configuration for this model)."""
    if len(sessions) == 1:
        x = {k: v[:batch] for k, v in data.items()}
        fn = lambda: sessions[0].run(bo.OUT_NAMES, x)  # noqa: E731
    else:
        h = batch // 2
        halves = [{k: v[:h] for k, v in data.items()}, {k: v[h:batch] for k, v in data.items()}]

        def fn():
            ts = [threading.Thread(target=s.run, args=(bo.OUT_NAMES, x)) for s, x in zip(sessions, halves)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
    r = bo._time_throughput(fn, batch)
    out = {"cust_per_s": r["cust_per_s_median"]}
    if batch == 1 and len(sessions) == 1:
        out["p50_us"] = bo._time_latency(fn)["p50_us"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ltvx", default="target/release/ltvx")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=1.5, help="ltvx seconds per configuration")
    ap.add_argument("--json", help="write the rows here as well")
    ap.add_argument("--workdir", default="/tmp/peer/work")
    args = ap.parse_args()
    sys.path.insert(0, str(PEER))
    import bench_ort as bo  # noqa: E402 (the peer harness: ONNX artifacts, timing loops)
    import value_model as vm  # noqa: E402

    paths = bo.build_artifacts(Path(args.workdir), lambda m: print(m, file=sys.stderr))
    overhead = bo.ort_call_overhead(Path(args.workdir))["p50_us"]
    data = vm.make_inputs(65536, bo.BENCH_SEED)
    # (label, ltvx precision, ort variant, batch, threads)
    configs = [("int8", "int8", "int8_static_qdq", b, 1) for b in (1, 256, 4096)]
    configs += [("int8", "int8", "int8_static_qdq", 65536, 2), ("fp32", "fp32", "fp32", 4096, 1), ("fp32", "fp32", "fp32", 1, 1)]
    sessions = {(v, t): [bo.make_session(paths[v], 1) for _ in range(t)] for _, _, v, _, t in configs}
    results = {c: [] for c in configs}
    for rnd in range(args.rounds):
        for c in configs:
            label, prec, var, batch, threads = c
            lt = ltvx_rate(args.ltvx, prec, batch, threads, args.duration, [])
            ort = ort_rate(bo, sessions[(var, threads)], data, batch)
            results[c].append((lt, ort))
            print(f"round {rnd + 1} {label} B={batch} T={threads}: ltvx {lt['cust_per_s']:,.0f}/s, "
                  f"ort {ort['cust_per_s']:,.0f}/s, ratio {lt['cust_per_s'] / ort['cust_per_s']:.2f}", file=sys.stderr)
    rows = []
    print("| precision | batch | threads | ltvx cust/s | ONNX Runtime cust/s | ratio (median of rounds) | batch-1 p50 µs ltvx / ORT engine-only |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for c, runs in results.items():
        label, _, var, batch, threads = c
        ratio = statistics.median(lt["cust_per_s"] / o["cust_per_s"] for lt, o in runs)
        lt_med = statistics.median(lt["cust_per_s"] for lt, _ in runs)
        ort_med = statistics.median(o["cust_per_s"] for _, o in runs)
        lat = ""
        if batch == 1:
            lat = f"{statistics.median(lt['p50_us'] for lt, _ in runs):.1f} / {statistics.median(o['p50_us'] for _, o in runs) - overhead:.1f}"
        ort_cfg = "2 sessions × 1 thread" if threads == 2 else "1 thread"
        print(f"| {label} | {batch} | {threads} ({ort_cfg} for ORT) | {lt_med:,.0f} | {ort_med:,.0f} | {ratio:.2f}× | {lat} |")
        rows.append({"precision": label, "ort_variant": var, "batch": batch, "threads": threads, "ratio": ratio,
                     "ltvx_cust_per_s": lt_med, "ort_cust_per_s": ort_med, "rounds": runs})
    if args.json:
        Path(args.json).write_text(json.dumps({"ort_call_overhead_us": overhead, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
