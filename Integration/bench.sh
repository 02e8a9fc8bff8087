#!/usr/bin/env bash
# Integration/bench.sh [scenario...]: starts what the named scenarios need on loopback, runs
# `swift run -c release tandem-bench`, stops what it started, and prints one JSON line per scenario:
# {"scenario": ..., "reference": N, "tandem": N, "unit": "ops/s" or "s", "ratio": tandem/reference, "better": ...}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_all EXIT INT TERM
cd "$TANDEM_ROOT"

# The references are one-threaded C clients (redis-benchmark, memaslap, the curl loops), so every
# scenario runs Tandem on one loop too, unless TANDEM_EVENT_LOOPS says otherwise; loop-group measures
# one loop against two in the same run.
export TANDEM_EVENT_LOOPS="${TANDEM_EVENT_LOOPS:-1}"

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(locmem)
ensure_packages
extra=()
views=()
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
# nginx serving a small file (http-small-gets, ahc-peer), once.
start_small_file() {
  if [ -z "${NGINX_PORT:-}" ]; then
    ensure_packages nginx
    NGINX_PORT=$(free_port)
    mkdir -p "$RUN_DIR/www"
    printf 'hello from nginx\n' > "$RUN_DIR/www/small.txt"
    start_nginx "$NGINX_PORT" "$RUN_DIR/www"
    extra+=(--small-file "http://127.0.0.1:$NGINX_PORT/small.txt")
  fi
}
for s in "${scenarios[@]}"; do
  case "$s" in
    redis-*|near-cache-*|inflight-10k|loop-group)
      [ "$s" = inflight-10k ] && start_upstream
      [ "$s" = loop-group ] && start_small_file
      if [ "$s" = redis-cluster-async-get ]; then
        start_cluster
        extra+=(--redis-cluster "$TANDEM_REDIS_CLUSTER")
      elif [ "$s" = redis-tls-async-get ]; then
        # A server of its own with a plain and a TLS port (the same data), certificates from a CA made here.
        make_test_certificates
        REDIS_TLS_PLAIN_PORT=$(free_port); REDIS_TLS_PORT=$(free_port)
        start_redis bench-tls "$REDIS_TLS_PLAIN_PORT" --tls-port "$REDIS_TLS_PORT" --tls-cert-file "$RUN_DIR/tls/redis.pem" \
          --tls-key-file "$RUN_DIR/tls/redis.key" --tls-ca-cert-file "$RUN_DIR/tls/ca.pem" --tls-auth-clients no
        extra+=(--redis-tls "rediss://localhost:$REDIS_TLS_PORT" --redis-tls-plain "redis://127.0.0.1:$REDIS_TLS_PLAIN_PORT"
                --redis-tls-ca "$RUN_DIR/tls/ca.pem")
      elif [ -z "${REDIS_PORT:-}" ]; then
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
    django-codec)
      extra+=(--python "$(command -v python3)")
      ;;
    http-fanout-delay|hedged-fanout|http-cached-get)
      start_upstream
      ;;
    http-small-gets)
      start_small_file
      gcc -O2 -o "$BIN/curl_multi_gets" "$TANDEM_ROOT/Integration/bench/curl_multi_gets.c" $(pkg-config --cflags --libs libcurl)
      extra+=(--curl-reference "$BIN/curl_multi_gets")
      ;;
    ahc-peer)
      # swift-server's async-http-client on the same workloads (a package of its own: Integration/peer).
      start_small_file
      start_upstream
      (cd "$TANDEM_ROOT/Integration/peer" && swift build -c release >&2)
      extra+=(--ahc-peer "$TANDEM_ROOT/Integration/peer/.build/release/ahc-peer")
      ;;
    view-product|view-product-near|view-dashboard)
      views+=("$s")
      ;;
    *) ;;  # tandem-bench names unknown scenarios itself
  esac
done

# The end-to-end views: the example shop (Examples/, release) and the same views in Django 5.2, both
# ways Django is deployed (async views on uvicorn, sync views on gunicorn with threads), as many
# workers as cores, against one Redis and nginx serving the dashboard's five documents; wrk drives
# each in turn (Integration/bench/views.py).
start_view_servers() {
  ensure_packages wrk
  python3 -c "import django, uvicorn, gunicorn, httpx, redis" 2>/dev/null \
    || python3 -m pip install -q "django==5.2.*" uvicorn gunicorn httpx redis >&2
  local shop_port async_port sync_port cores django_dir upstream
  cores=$(nproc)
  start_shop_servers
  upstream="http://127.0.0.1:$SHOP_NGINX_PORT"
  (cd "$TANDEM_ROOT/Examples" && swift build -c release --product shop >&2)
  shop_port=$(free_port)
  TANDEM_CACHES="$(shop_caches_json)" SHOP_UPSTREAM="$upstream" SHOP_PORT="$shop_port" SHOP_LOG_LEVEL=warning \
    start_background shop "$shop_port" "$TANDEM_ROOT/Examples/.build/release/shop"
  # The same shop with a near cache on its Redis cache (view-product-near), idle while the others run.
  local near_port
  near_port=$(free_port)
  TANDEM_CACHES="$(shop_caches_json near)" SHOP_UPSTREAM="$upstream" SHOP_PORT="$near_port" SHOP_LOG_LEVEL=warning \
    start_background shop-near "$near_port" "$TANDEM_ROOT/Examples/.build/release/shop"
  export SHOP_NEAR_URL="http://127.0.0.1:$near_port"
  django_dir="$TANDEM_ROOT/Integration/bench/django_shop"
  async_port=$(free_port); sync_port=$(free_port)
  SHOP_REDIS_URL="redis://127.0.0.1:$SHOP_REDIS_PORT/1" SHOP_UPSTREAM="$upstream" \
    start_background django-async "$async_port" python3 -m uvicorn --app-dir "$django_dir" shop.asgi:application \
      --host 127.0.0.1 --port "$async_port" --workers "$cores" --no-access-log --log-level warning
  SHOP_REDIS_URL="redis://127.0.0.1:$SHOP_REDIS_PORT/2" SHOP_UPSTREAM="$upstream" \
    start_background django-sync "$sync_port" python3 -m gunicorn --chdir "$django_dir" -w "$cores" --threads 16 \
      -b "127.0.0.1:$sync_port" --log-level warning shop.wsgi:application
  export SHOP_URL="http://127.0.0.1:$shop_port" DJANGO_ASYNC_URL="http://127.0.0.1:$async_port"
  export DJANGO_SYNC_URL="http://127.0.0.1:$sync_port"
}
if [ ${#views[@]} -gt 0 ]; then
  start_view_servers
  python3 "$TANDEM_ROOT/Integration/bench/views.py" --seconds "${TANDEM_VIEW_SECONDS:-10}" "${views[@]}"
fi

others=()
for s in "${scenarios[@]}"; do case "$s" in view-*) ;; *) others+=("$s") ;; esac; done
[ ${#others[@]} -gt 0 ] || exit 0
swift build -c release --product tandem-bench >&2
# inflight-10k measures the process's peak threads and RSS growth, so it runs in a process of its own:
# in the shared one it would count the threads and memory the scenarios before it left behind.
shared=()
own=()
for s in "${others[@]}"; do
  if [ "$s" = inflight-10k ] && [ ${#others[@]} -gt 1 ]; then own+=("$s"); else shared+=("$s"); fi
done
# TANDEM_BENCH_WRAPPER runs the benchmark under a profiler, e.g. "perf record -e cpu-clock -g -o /tmp/perf.data".
if [ ${#shared[@]} -gt 0 ]; then
  ${TANDEM_BENCH_WRAPPER:-} .build/release/tandem-bench "${shared[@]}" "${extra[@]}" ${TANDEM_BENCH_ARGS:-}
fi
for s in "${own[@]}"; do
  ${TANDEM_BENCH_WRAPPER:-} .build/release/tandem-bench "$s" "${extra[@]}" ${TANDEM_BENCH_ARGS:-}
done
