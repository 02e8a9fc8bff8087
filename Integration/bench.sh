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
# The asyncio upstream (Integration/upstream.py), once.
start_upstream() {
  if [ -z "${UPSTREAM_PORT:-}" ]; then
    UPSTREAM_PORT=$(free_port)
    start_background upstream "$UPSTREAM_PORT" python3 "$TANDEM_ROOT/Integration/upstream.py" --port "$UPSTREAM_PORT"
    extra+=(--upstream "http://127.0.0.1:$UPSTREAM_PORT")
  fi
}
for s in "${scenarios[@]}"; do
  case "$s" in
    redis-*|inflight-10k)
      [ "$s" = inflight-10k ] && start_upstream
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
        start_memcached bench "$MEMCACHED_PORT" -t 2 -m 512
        extra+=(--memcached "127.0.0.1:$MEMCACHED_PORT")
      fi
      if [ "$s" = memcached-sync-get ]; then
        gcc -O2 -o "$BIN/memcached_sync_get" "$TANDEM_ROOT/Integration/bench/memcached_sync_get.c" $(pkg-config --cflags --libs libmemcached)
        extra+=(--memcached-reference "$BIN/memcached_sync_get")
      fi
      ;;
    http-fanout-delay|hedged-fanout|http-cached-get)
      start_upstream
      ;;
    http-small-gets)
      ensure_packages nginx
      NGINX_PORT=$(free_port)
      mkdir -p "$RUN_DIR/nginx/www" "$RUN_DIR/nginx/tmp"
      printf 'hello from nginx\n' > "$RUN_DIR/nginx/www/small.txt"
      chmod 755 "$RUN_DIR" "$RUN_DIR/nginx" "$RUN_DIR/nginx/www"; chmod 644 "$RUN_DIR/nginx/www/small.txt"
      cat > "$RUN_DIR/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $RUN_DIR/nginx/nginx.pid;
error_log $RUN_DIR/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $RUN_DIR/nginx/tmp;
  proxy_temp_path $RUN_DIR/nginx/tmp;
  fastcgi_temp_path $RUN_DIR/nginx/tmp;
  uwsgi_temp_path $RUN_DIR/nginx/tmp;
  scgi_temp_path $RUN_DIR/nginx/tmp;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NGINX_PORT; root $RUN_DIR/nginx/www; }
}
NGINX
      nginx -c "$RUN_DIR/nginx/nginx.conf" -p "$RUN_DIR/nginx"
      remember_pidfile "$RUN_DIR/nginx/nginx.pid"
      wait_port "$NGINX_PORT"
      gcc -O2 -o "$BIN/curl_multi_gets" "$TANDEM_ROOT/Integration/bench/curl_multi_gets.c" $(pkg-config --cflags --libs libcurl)
      extra+=(--small-file "http://127.0.0.1:$NGINX_PORT/small.txt" --curl-reference "$BIN/curl_multi_gets")
      ;;
    *) ;;  # tandem-bench names unknown scenarios itself
  esac
done
swift build -c release --product tandem-bench >&2
# TANDEM_BENCH_WRAPPER runs the benchmark under a profiler, e.g. "perf record -e cpu-clock -g -o /tmp/perf.data".
${TANDEM_BENCH_WRAPPER:-} .build/release/tandem-bench "${scenarios[@]}" "${extra[@]}" ${TANDEM_BENCH_ARGS:-}
