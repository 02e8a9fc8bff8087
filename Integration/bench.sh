#!/usr/bin/env bash
# Integration/bench.sh [scenario...]: starts what the named scenarios need on loopback, runs
# `swift run -c release tandem-bench`, stops what it started, and prints one JSON line per scenario:
# {"scenario": ..., "reference": N, "tandem": N, "unit": "ops/s" or "s", "ratio": tandem/reference, "better": ...}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_all EXIT INT TERM
cd "$TANDEM_ROOT"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(locmem)
ensure_packages
for s in "${scenarios[@]}"; do
  case "$s" in
    locmem) ;;
    *) ;;  # tandem-bench names unknown scenarios itself
  esac
done
swift build -c release --product tandem-bench >&2
.build/release/tandem-bench "${scenarios[@]}" ${TANDEM_BENCH_ARGS:-}
