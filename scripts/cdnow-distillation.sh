#!/usr/bin/env bash
# Trains a tiny student on each CDNOW split twice — alone, and distilled from that split's base model
# of scripts/cdnow-accuracy.sh (OUT_DIR/splitK.ltvx) — and prints each against the teacher on the
# split's held-out customers (the docs/ACCURACY.md distillation table).
# Usage: scripts/cdnow-distillation.sh [OUT_DIR] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/accuracy}
threads=${2:-1}
cargo build --release --quiet
ltvx=target/release/ltvx
log=data/CDNOW_master.txt
for seed in 0 1 2 3 4; do
  m="$out/split$seed"
  test="data/splits/cdnow_seed${seed}_test.txt"
  # The tiny network needs more, faster epochs than base's defaults to converge (an epoch is ~0.15 s).
  t=(--transactions "$log" --cutoff 1997-09-30 --horizon-weeks 39 --holdout-customers "$test" --seed "$seed"
     --threads "$threads" --preset tiny --epochs 300 --learning-rate 2e-3 --patience 20)
  "$ltvx" -q train "${t[@]}" --out "$m-tiny-long.ltvx"
  "$ltvx" -q train "${t[@]}" --teacher "$m.ltvx" --out "$m-tiny-dist-long.ltvx"
  "$ltvx" -q eval "$m.ltvx" "$m-tiny-long.ltvx" "$m-tiny-dist-long.ltvx" --transactions "$log" --customers "$test" \
    --json > "$m-distillation.json"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| split | teacher (base) Gini | tiny alone | tiny distilled | distilled − teacher | teacher AUC | tiny alone | distilled | MACs teacher / student |")
print("|---|---|---|---|---|---|---|---|---|")
for s in range(5):
    t, a, d = json.load(open(f"{out}/split{s}-distillation.json"))["models"]
    g = lambda m: m["evaluation"]["model"]["ltv"]["normalized_gini"]
    auc = lambda m: m["evaluation"]["model"]["churn"]["auc"]
    print(f"| {s} | {g(t):.4f} | {g(a):.4f} | {g(d):.4f} | {g(d) - g(t):+.4f} | {auc(t):.4f} | {auc(a):.4f} | {auc(d):.4f} | "
          f"{t['macs_per_customer']} / {d['macs_per_customer']} |")
PY
