#!/usr/bin/env bash
# Trains and evaluates ltvx on the five reference CDNOW splits (data/splits/), the protocol of
# data/cdnow-baselines.md, and prints the docs/ACCURACY.md table (mean ± std, and per split).
# Usage: scripts/cdnow-accuracy.sh [OUT_DIR] [extra `ltvx train` flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/accuracy}
shift || true
mkdir -p "$out"
cargo build --release --quiet
ltvx=target/release/ltvx
for seed in 0 1 2 3 4; do
  "$ltvx" -q train --transactions data/CDNOW_master.txt --cutoff 1997-09-30 --horizon-weeks 39 \
    --holdout-customers "data/splits/cdnow_seed${seed}_test.txt" --seed "$seed" --threads 2 "$@" --out "$out/split$seed.ltvx"
  "$ltvx" -q eval "$out/split$seed.ltvx" --transactions data/CDNOW_master.txt \
    --customers "data/splits/cdnow_seed${seed}_test.txt" --json > "$out/split$seed.json"
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
runs = [json.load(open(f"{out}/split{s}.json")) for s in range(5)]
rows = [("norm. Gini", lambda r: r["ltv"]["normalized_gini"]), ("Spearman", lambda r: r["ltv"]["spearman"]),
        ("decile MAPE", lambda r: r["ltv"]["decile_mape"]), ("Σpred/Σact", lambda r: r["ltv"]["total_ratio"]),
        ("top-10% share", lambda r: r["ltv"]["top10_share"]), ("churn AUC", lambda r: r["churn"]["auc"])]
def cell(vals): return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"
print("| method | " + " | ".join(n for n, _ in rows) + " |")
print("|---|" + "---|" * len(rows))
for name, key in [("ltvx (base preset)", "model"), ("BG/NBD + Gamma-Gamma (ltvx's own fit)", "baseline")]:
    print(f"| {name} | " + " | ".join(cell([f(r[key]) for r in runs]) for _, f in rows) + " |")
print()
print("| split | " + " | ".join(n for n, _ in rows) + " |")
print("|---|" + "---|" * len(rows))
for s, r in enumerate(runs):
    print(f"| {s} | " + " | ".join(f"{f(r['model']):.3f}" for _, f in rows) + " |")
PY
