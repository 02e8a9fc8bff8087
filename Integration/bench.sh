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
extra=()
BIN="$TANDEM_ROOT/Integration/bench/bin"
mkdir -p "$BIN"
for s in "${scenarios[@]}"; do
  case "$s" in
    redis-*)
      if [ -z "${REDIS_PORT:-}" ]; then
        REDIS_PORT=$(free_port)
        start_redis bench "$REDIS_PORT"
        extra+=(--redis "redis://127.0.0.1:$REDIS_PORT")
      fi
      if [ "$s" = redis-sync-get ]; then
        gcc -O2 -o "$BIN/redis_sync_get" "$TANDEM_ROOT/Integration/bench/redis_sync_get.c" $(pkg-config --cflags --libs hiredis 2>/dev/null)
        extra+=(--redis-reference "$BIN/redis_sync_get")
      fi
      ;;
    memcached-*)
      if [ -z "${MEMCACHED_PORT:-}" ]; then
        MEMCACHED_PORT=$(free_port)
        start_memcached bench "$MEMCACHED_PORT" -t 2
        extra+=(--memcached "127.0.0.1:$MEMCACHED_PORT")
      fi
      if [ "$s" = memcached-sync-get ]; then
        gcc -O2 -o "$BIN/memcached_sync_get" "$TANDEM_ROOT/Integration/bench/memcached_sync_get.c" $(pkg-config --cflags --libs libmemcached)
        extra+=(--memcached-reference "$BIN/memcached_sync_get")
      fi
      ;;
    *) ;;  # tandem-bench names unknown scenarios itself
  esac
done
swift build -c release --product tandem-bench >&2
.build/release/tandem-bench "${scenarios[@]}" "${extra[@]}" ${TANDEM_BENCH_ARGS:-}
