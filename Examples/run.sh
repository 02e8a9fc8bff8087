#!/usr/bin/env bash
# Runs the example shop (release build) with its servers on loopback: Redis for the default cache,
# memcached for sessions, LocMem for whole pages, nginx serving the dashboard's five services.
#   Examples/run.sh            the shop on SHOP_PORT (default 8080) until Ctrl-C
source "$(dirname "${BASH_SOURCE[0]}")/../Integration/lib.sh"
trap stop_all EXIT INT TERM
ensure_packages nginx

redis_port=$(free_port); start_redis shop "$redis_port"
memcached_port=$(free_port); start_memcached shop "$memcached_port"
write_shop_documents "$RUN_DIR/shop-www"
nginx_port=$(free_port); start_nginx "$nginx_port" "$RUN_DIR/shop-www"

export TANDEM_CACHES="{\"default\": {\"BACKEND\": \"redis\", \"LOCATION\": \"redis://127.0.0.1:$redis_port/0\"},
  \"sessions\": {\"BACKEND\": \"memcached\", \"LOCATION\": \"127.0.0.1:$memcached_port\"},
  \"pages\": {\"BACKEND\": \"locmem\", \"LOCATION\": \"pages\"}}"
export SHOP_UPSTREAM="http://127.0.0.1:$nginx_port" SHOP_PORT="${SHOP_PORT:-8080}"
cd "$TANDEM_ROOT/Examples"
swift build -c release --product shop
echo "shop on http://127.0.0.1:$SHOP_PORT: /product/1 /dashboard /about /visits (POST) /login?user=NAME (POST) /me" >&2
"$TANDEM_ROOT/Examples/.build/release/shop"
