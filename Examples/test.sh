#!/usr/bin/env bash
# The example shop's tests: starts Redis, memcached and nginx (the dashboard's five services) on free
# loopback ports, builds the example package and runs its tests with SHOP_REQUIRE_SERVERS=1 (a
# missing server fails them), then stops what it started.
source "$(dirname "${BASH_SOURCE[0]}")/../Integration/lib.sh"
trap stop_all EXIT INT TERM
start_shop_servers
export TANDEM_RUN_DIR="$RUN_DIR" SHOP_REQUIRE_SERVERS=1
export SHOP_TEST_REDIS_PORT="$SHOP_REDIS_PORT" SHOP_TEST_MEMCACHED="127.0.0.1:$SHOP_MEMCACHED_PORT"
export SHOP_TEST_UPSTREAM="http://127.0.0.1:$SHOP_NGINX_PORT"
cd "$TANDEM_ROOT/Examples"
swift build --build-tests
swift test --skip-build --disable-xctest
