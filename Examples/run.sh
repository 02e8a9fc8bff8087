#!/usr/bin/env bash
# Runs the example shop (release build) with its servers on loopback: Redis for the default cache,
# memcached for sessions, LocMem for whole pages, nginx serving the dashboard's five services.
#   Examples/run.sh            the shop on SHOP_PORT (default 8080) until Ctrl-C
source "$(dirname "${BASH_SOURCE[0]}")/../Integration/lib.sh"
trap stop_all EXIT INT TERM
start_shop_servers
export TANDEM_CACHES="$(shop_caches_json)" SHOP_UPSTREAM="http://127.0.0.1:$SHOP_NGINX_PORT" SHOP_PORT="${SHOP_PORT:-8080}"
cd "$TANDEM_ROOT/Examples"
swift build -c release --product shop
echo "shop on http://127.0.0.1:$SHOP_PORT: /product/1 /dashboard /about /visits (POST) /login?user=NAME (POST) /me /metrics" >&2
"$TANDEM_ROOT/Examples/.build/release/shop"
