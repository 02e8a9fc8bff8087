#!/usr/bin/env bash
# Shared helpers for Tandem's scripts: install what is missing, start servers on free loopback
# ports, and stop exactly what was started (by PID), also on failure.
set -euo pipefail

TANDEM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${TANDEM_RUN_DIR:-$(mktemp -d /tmp/tandem-run.XXXXXX)}"
mkdir -p "$RUN_DIR"
STARTED_PIDS=()

# The Debian packages Tandem builds against and tests with.
TANDEM_PACKAGES=(libhiredis-dev libssl-dev libmemcached-dev libmemcached-tools libcurl4-openssl-dev
                 zlib1g-dev liblzma-dev liblz4-dev libzstd-dev
                 redis-server redis-tools memcached python3 procps openssl sasl2-bin)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_django_python: a Python with Django 5.2, pymemcache, redis-py, django-redis 6.0 and its lz4 and
# zstd compressors' packages (from PyPI when missing), for
# the tests that share a cache with a Django app; exports its path as TANDEM_DJANGO_PYTHON.
ensure_django_python() {
  local py
  py=$(command -v python3) || { echo "python3 is required (the Django sharing tests)" >&2; return 1; }
  local wanted=("django==5.2.*" pymemcache redis "django-redis==6.0.*" lz4 pyzstd)
  if ! "$py" -c "import django, pymemcache, redis, django_redis, lz4, pyzstd; assert django.VERSION[:2] == (5, 2)" 2>/dev/null; then
    echo "installing ${wanted[*]} (pip)" >&2
    "$py" -m pip install -q "${wanted[@]}" >&2 || "$py" -m pip install -q --break-system-packages "${wanted[@]}" >&2
  fi
  export TANDEM_DJANGO_PYTHON="$py"
}

# The modules whose documentation is built with swift-docc-plugin, as one combined archive (the
# adapters are built with their traits, elsewhere).
DOC_MODULES=(Tandem TandemLoop TandemCache TandemTransport TandemRedis TandemMemcached TandemHTTP TandemConfiguration)

# plugin_docs OUT: swift-docc-plugin (`swift package generate-documentation`, the command the README
# gives) builds DOC_MODULES and the Tandem product's catalog into OUT/Tandem.doccarchive, one archive
# with a page per module (a doc link to another module's symbol does not resolve there, so articles
# name such symbols in code voice), with warnings as errors: a doc comment whose symbol
# link no longer resolves, or a parameter documented under a wrong name, fails it. The plugin builds
# the modules with parameters of its own, so the next plain build recompiles them (about a minute).
plugin_docs() {
  local out="$1" targets=() m
  for m in "${DOC_MODULES[@]}"; do targets+=(--target "$m"); done
  mkdir -p "$out"
  (cd "$TANDEM_ROOT" && swift package --allow-writing-to-directory "$out" generate-documentation "${targets[@]}" \
    --enable-experimental-combined-documentation --output-path "$out/Tandem.doccarchive" --warnings-as-errors >&2) \
    || { echo "docs: DocC reported problems (above)" >&2; return 1; }
}

# The adapters' modules, documented from the adapters build (both traits on: the plugin would build
# SwiftNIO, Hummingbird and Vapor once more), whose symbol graphs that build writes to
# ADAPTER_SYMBOL_GRAPHS (adapter_symbol_flags).
ADAPTER_DOC_MODULES=(TandemHummingbird TandemVapor)
ADAPTER_SYMBOL_GRAPHS="$TANDEM_ROOT/.build-adapters/symbolgraphs"
adapter_symbol_flags=(-Xswiftc -emit-symbol-graph -Xswiftc -emit-symbol-graph-dir -Xswiftc "$ADAPTER_SYMBOL_GRAPHS")

# convert_docs OUT GRAPHS MODULE...: DocC (the toolchain's docc) turns each module, from the symbol
# graphs a build left in GRAPHS, with its catalog when it has one (Sources/M/M.docc), into
# OUT/M.doccarchive, with warnings as errors.
convert_docs() {
  local out="$1" graphs="$2" m dir catalog modules
  shift 2
  modules=("$@")
  mkdir -p "$out"
  for m in "${modules[@]}"; do
    dir="$out/graphs/$m"
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$graphs/$m.symbols.json" "$dir/" || { echo "docs: no symbol graph for $m in $graphs" >&2; return 1; }
    cp "$graphs/$m"@*.symbols.json "$dir/" 2>/dev/null || true
    catalog=()
    [ -d "$TANDEM_ROOT/Sources/$m/$m.docc" ] && catalog=("$TANDEM_ROOT/Sources/$m/$m.docc")
    docc convert "${catalog[@]}" --additional-symbol-graph-dir "$dir" --fallback-display-name "$m" \
      --fallback-bundle-identifier "org.tandem.$m" --output-path "$out/$m.doccarchive" --warnings-as-errors >&2 \
      || { echo "docs: DocC reported problems in $m (above)" >&2; return 1; }
  done
}

# ensure_packages [extra...]: installs whatever is missing (apt-get update first).
ensure_packages() {
  local missing=()
  for p in "${TANDEM_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  # apt starts no daemons we rely on; if the packaging did start system instances, we ignore them.
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

wait_port() {  # wait_port PORT [seconds]
  local port=$1 limit=${2:-10} i=0
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    i=$((i + 1)); [ $i -gt $((limit * 20)) ] && { echo "port $port did not open" >&2; return 1; }
    sleep 0.05
  done
}

remember_pidfile() {  # remember_pidfile FILE: waits for it and records the PID to stop later
  local f=$1 i=0
  while [ ! -s "$f" ]; do i=$((i + 1)); [ $i -gt 200 ] && { echo "no pid file $f" >&2; return 1; }; sleep 0.05; done
  STARTED_PIDS+=("$(cat "$f")")
}

# start_redis NAME PORT [extra redis-server args...]
start_redis() {
  local name=$1 port=$2; shift 2
  # No persistence, but a replication sync writes an RDB (the primary's dump, the replica's copy):
  # a server of the next phase must not load the last phase's keys from it.
  rm -f "$RUN_DIR/redis-$name.pid" "$RUN_DIR/redis-$name.rdb"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$RUN_DIR/redis-$name.pid" --logfile "$RUN_DIR/redis-$name.log" --dir "$RUN_DIR" \
    --dbfilename "redis-$name.rdb" --enable-debug-command local "$@" >/dev/null
  remember_pidfile "$RUN_DIR/redis-$name.pid"
  wait_port "$port"
}

# start_memcached NAME PORT [extra args...]
start_memcached() {
  local name=$1 port=$2; shift 2
  rm -f "$RUN_DIR/memcached-$name.pid"
  memcached -l 127.0.0.1 -p "$port" -U 0 -d -u "$(id -un)" -P "$RUN_DIR/memcached-$name.pid" "$@"
  remember_pidfile "$RUN_DIR/memcached-$name.pid"
  wait_port "$port"
}

# start_background NAME PORT command...: a foreground server put in the background.
start_background() {
  local name=$1 port=$2; shift 2
  "$@" >"$RUN_DIR/$name.log" 2>&1 &
  STARTED_PIDS+=("$!")
  wait_port "$port" 20
}

stop_all() {
  # Servers that tests started themselves (they record their PIDs here).
  if [ -f "$RUN_DIR/spawned.pids" ]; then
    while read -r pid; do [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true; done < "$RUN_DIR/spawned.pids"
    rm -f "$RUN_DIR/spawned.pids"  # never kill these numbers again: they may belong to someone else later
  fi
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  done
  STARTED_PIDS=()
}

# start_nginx PORT DOCROOT: nginx (Debian's) serving DOCROOT on 127.0.0.1:PORT with keep-alive, no log.
start_nginx() {
  local port=$1 root=$2 d="$RUN_DIR/nginx-$1"
  mkdir -p "$d/tmp"
  chmod 755 "$RUN_DIR" "$d" "$root"; find "$root" -type f -exec chmod 644 {} +
  cat > "$d/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $d/tmp;
  proxy_temp_path $d/tmp;
  fastcgi_temp_path $d/tmp;
  uwsgi_temp_path $d/tmp;
  scgi_temp_path $d/tmp;
  keepalive_requests 1000000;
  types { application/json json; text/plain txt; }
  server { listen 127.0.0.1:$port; root $root; }
}
NGINX
  nginx -c "$d/nginx.conf" -p "$d"
  remember_pidfile "$d/nginx.pid"
  wait_port "$port"
}

# write_shop_documents DIR: the five small JSON documents the example shop's dashboard reads.
write_shop_documents() {
  local dir=$1 name
  mkdir -p "$dir"
  for name in users orders recommendations inventory reviews; do
    printf '{"service": "%s", "items": [{"id": 1, "title": "%s one"}, {"id": 2, "title": "%s two"}, {"id": 3, "title": "%s three"}]}\n' \
      "$name" "$name" "$name" "$name" > "$dir/$name.json"
  done
}

# start_shop_servers: what the example shop needs, on free loopback ports: Redis (its default cache),
# memcached (sessions), nginx serving the dashboard's five documents. Sets SHOP_REDIS_PORT,
# SHOP_MEMCACHED_PORT and SHOP_NGINX_PORT.
start_shop_servers() {
  ensure_packages nginx
  SHOP_REDIS_PORT=$(free_port); start_redis shop "$SHOP_REDIS_PORT"
  SHOP_MEMCACHED_PORT=$(free_port); start_memcached shop "$SHOP_MEMCACHED_PORT"
  write_shop_documents "$RUN_DIR/shop-www"
  SHOP_NGINX_PORT=$(free_port); start_nginx "$SHOP_NGINX_PORT" "$RUN_DIR/shop-www"
}

# shop_caches_json: the example shop's TANDEM_CACHES on the servers of start_shop_servers.
# shop_caches_json [near]: the example shop's TANDEM_CACHES; with `near`, its default Redis cache keeps
# a near cache (OPTIONS.NEAR_CACHE).
shop_caches_json() {
  local options=""
  [ "${1:-}" = near ] && options=', "OPTIONS": {"NEAR_CACHE": true}'
  printf '{"default": {"BACKEND": "redis", "LOCATION": "redis://127.0.0.1:%s/0"%s}, "sessions": {"BACKEND": "memcached", "LOCATION": "127.0.0.1:%s"}, "pages": {"BACKEND": "locmem", "LOCATION": "pages"}}' \
    "$SHOP_REDIS_PORT" "$options" "$SHOP_MEMCACHED_PORT"
}

# make_test_certificates: a private CA and a certificate for localhost signed by it (self-signed chain).
make_test_certificates() {
  local d="$RUN_DIR/tls"
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 \
    -subj "/CN=Tandem Test CA" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$d/ext.cnf"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/server.pem" \
    -days 2 -extfile "$d/ext.cnf" >/dev/null 2>&1
  # For Redis over TLS: a server certificate for the name localhost only (so that connecting to
  # 127.0.0.1 is a name mismatch), a client certificate from the same CA (mutual TLS), and a CA that
  # signed neither (an untrusted server).
  openssl req -newkey rsa:2048 -nodes -keyout "$d/redis.key" -out "$d/redis.csr" -subj "/CN=localhost" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost\n' > "$d/redis-ext.cnf"
  openssl x509 -req -in "$d/redis.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/redis.pem" \
    -days 2 -extfile "$d/redis-ext.cnf" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -keyout "$d/client.key" -out "$d/client.csr" -subj "/CN=tandem-client" >/dev/null 2>&1
  openssl x509 -req -in "$d/client.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -out "$d/client.pem" \
    -days 2 >/dev/null 2>&1
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$d/other-ca.key" -out "$d/other-ca.pem" -days 2 \
    -subj "/CN=Another CA" >/dev/null 2>&1
}

# start_redis_tls NAME PORT [extra args...]: a redis-server that speaks only TLS on PORT, with the
# certificates of make_test_certificates.
start_redis_tls() {
  local name=$1 port=$2 d="$RUN_DIR/tls"; shift 2
  rm -f "$RUN_DIR/redis-$name.pid" "$RUN_DIR/redis-$name.rdb"
  redis-server --port 0 --tls-port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --tls-cert-file "$d/redis.pem" --tls-key-file "$d/redis.key" --tls-ca-cert-file "$d/ca.pem" \
    --pidfile "$RUN_DIR/redis-$name.pid" --logfile "$RUN_DIR/redis-$name.log" --dir "$RUN_DIR" \
    --dbfilename "redis-$name.rdb" "$@" >/dev/null
  remember_pidfile "$RUN_DIR/redis-$name.pid"
  wait_port "$port"
}

# start_sentinels: a primary, a replica and three sentinels (redis-server --sentinel, the program
# Debian's redis-sentinel package runs) watching them as the service "tandem"; exports where the
# sentinels are. A failover (SENTINEL FAILOVER) swaps the two: only the fault phase does one.
start_sentinels() {
  local sp sr s i ports=()
  sp=$(free_port); start_redis sentinel-primary "$sp" --databases 4096
  sr=$(free_port); start_redis sentinel-replica "$sr" --databases 4096 --replicaof 127.0.0.1 "$sp"
  for i in 1 2 3; do
    s=$(free_port)
    rm -f "$RUN_DIR/sentinel-$i.pid"
    printf 'port %s\nbind 127.0.0.1\ndaemonize yes\npidfile %s\nlogfile %s\ndir %s\nsentinel monitor tandem 127.0.0.1 %s 2\nsentinel down-after-milliseconds tandem 2000\nsentinel failover-timeout tandem 10000\nsentinel parallel-syncs tandem 1\n' \
      "$s" "$RUN_DIR/sentinel-$i.pid" "$RUN_DIR/sentinel-$i.log" "$RUN_DIR" "$sp" > "$RUN_DIR/sentinel-$i.conf"
    redis-server "$RUN_DIR/sentinel-$i.conf" --sentinel >/dev/null
    remember_pidfile "$RUN_DIR/sentinel-$i.pid"
    wait_port "$s"
    ports+=("127.0.0.1:$s")
  done
  TANDEM_REDIS_SENTINELS=$(IFS=,; echo "${ports[*]}")
  export TANDEM_REDIS_SENTINELS
  export TANDEM_REDIS_SENTINEL_SERVICE=tandem
}

# start_cluster: six redis-servers in cluster mode joined by `redis-cli --cluster create` with one
# replica per primary; waits until every node says cluster_state:ok; exports the nodes.
start_cluster() {
  local nodes=() p bus i n
  for i in 1 2 3 4 5 6; do
    p=$(free_port); bus=$(free_port)
    rm -f "$RUN_DIR/nodes-cluster-$i.conf"   # a node must not come back with another run's cluster
    start_redis "cluster-$i" "$p" --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "nodes-cluster-$i.conf" \
      --cluster-node-timeout 2000
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$RUN_DIR/cluster-create.log" 2>&1 \
    || { cat "$RUN_DIR/cluster-create.log" >&2; return 1; }
  for n in "${nodes[@]}"; do
    i=0
    until redis-cli -p "${n##*:}" cluster info 2>/dev/null | grep -q "cluster_state:ok"; do
      i=$((i + 1)); [ $i -gt 300 ] && { echo "cluster node $n never reached cluster_state:ok" >&2; return 1; }
      sleep 0.1
    done
  done
  TANDEM_REDIS_CLUSTER=$(IFS=,; echo "${nodes[*]}")
  export TANDEM_REDIS_CLUSTER
}

# start_test_servers: every server the tests use; exports their addresses.
start_test_servers() {
  local rp rr ra rc m1 m2 m3 ms
  rp=$(free_port); start_redis primary "$rp" --databases 4096
  rr=$(free_port); start_redis replica "$rr" --databases 4096 --replicaof 127.0.0.1 "$rp"
  ra=$(free_port); start_redis auth "$ra" --requirepass "tandem-secret" \
    --user tandemuser on '>tandem-user-pw' '~*' '&*' '+@all'
  rc=$(free_port); start_redis chaos "$rc" --databases 4096
  m1=$(free_port); start_memcached m1 "$m1"
  m2=$(free_port); start_memcached m2 "$m2"
  m3=$(free_port); start_memcached m3 "$m3"
  export TANDEM_REDIS_URL="redis://127.0.0.1:$rp"
  export TANDEM_REDIS_REPLICA_URL="redis://127.0.0.1:$rr"
  export TANDEM_REDIS_AUTH_PORT="$ra"
  export TANDEM_REDIS_CHAOS_URL="redis://127.0.0.1:$rc"   # for tests that stall or kill connections
  export TANDEM_MEMCACHED_SERVERS="127.0.0.1:$m1,127.0.0.1:$m2,127.0.0.1:$m3"
  # A memcached that requires SASL (binary protocol): user "tandem", password "tandem-sasl-pw".
  local ms; ms=$(free_port)
  mkdir -p "$RUN_DIR/sasl"
  printf 'tandem-sasl-pw' | saslpasswd2 -a memcached -c -p -f "$RUN_DIR/sasl/sasldb2" tandem
  printf 'mech_list: plain\nsasldb_path: %s\n' "$RUN_DIR/sasl/sasldb2" > "$RUN_DIR/sasl/memcached.conf"
  SASL_CONF_PATH="$RUN_DIR/sasl" start_memcached sasl "$ms" -S
  export TANDEM_MEMCACHED_SASL="127.0.0.1:$ms"
  export TANDEM_RUN_DIR="$RUN_DIR"
  make_test_certificates
  # Redis over TLS: one instance that takes any client, one that requires a client certificate.
  local rt rm; rt=$(free_port); rm=$(free_port)
  start_redis_tls tls "$rt" --databases 4096 --tls-auth-clients no
  start_redis_tls mtls "$rm" --tls-auth-clients yes
  export TANDEM_REDIS_TLS_URL="rediss://localhost:$rt"
  export TANDEM_REDIS_MTLS_URL="rediss://localhost:$rm"
  export TANDEM_TLS_DIR="$RUN_DIR/tls"
  start_sentinels
  start_cluster
  if [ -f "$TANDEM_ROOT/Integration/upstream.py" ]; then
    local hp tp; hp=$(free_port); tp=$(free_port)
    start_background upstream "$hp" python3 "$TANDEM_ROOT/Integration/upstream.py" --port "$hp" \
      --tls-port "$tp" --cert "$RUN_DIR/tls/server.pem" --key "$RUN_DIR/tls/server.key"
    wait_port "$tp"
    export TANDEM_HTTP_UPSTREAM="http://127.0.0.1:$hp"
    export TANDEM_HTTPS_UPSTREAM="https://localhost:$tp"
    export TANDEM_HTTPS_CA="$RUN_DIR/tls/ca.pem"
  fi
  echo "servers: redis $rp (replica $rr, auth $ra, chaos $rc, tls $rt, mtls $rm), memcached $m1 $m2 $m3${TANDEM_HTTP_UPSTREAM:+, upstream $TANDEM_HTTP_UPSTREAM}" >&2
}
