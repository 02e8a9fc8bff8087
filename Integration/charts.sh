#!/usr/bin/env bash
# Integration/charts.sh [scenario...]: runs the benchmarks the charts show (Integration/bench.sh, every
# scenario side by side with its reference), keeps their JSON lines in charts/results.jsonl, and draws
# the SVGs next to them (Integration/charts.py; matplotlib is installed from PyPI if missing).
#   Integration/charts.sh                  the scenarios of BENCHMARKS.md's charts
#   Integration/charts.sh redis-async-get  only those named (the charts of the others are skipped)
#   CHARTS_FROM=FILE Integration/charts.sh draws from lines already measured, without running anything
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/charts"
mkdir -p "$OUT"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(redis-sync-get redis-async-get memcached-sync-get memcached-async-get
                                          http-fanout-delay near-cache-get view-product view-dashboard)
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q "matplotlib>=3.8" >&2
if [ -n "${CHARTS_FROM:-}" ]; then
  results="$CHARTS_FROM"
else
  results="$OUT/results.jsonl"
  bash "$ROOT/Integration/bench.sh" "${scenarios[@]}" | tee "$results.tmp"
  mv "$results.tmp" "$results"
fi
python3 "$ROOT/Integration/charts.py" "$results" --out "$OUT"
