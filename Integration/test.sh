#!/usr/bin/env bash
# The test command (CI runs exactly this). It installs what is missing, starts real servers on free
# loopback ports (redis-server x4, memcached x4, the HTTP upstream), runs the phases below with
# TANDEM_REQUIRE_SERVERS=1 (a missing server is a failure, never a skip), and stops every server it
# started, also on failure.
#
#   Integration/test.sh                 every phase
#   Integration/test.sh tests faults    only the named phases
#
# Phases:
#   tests    the unit and server tests (Swift Testing, debug build)
#   faults   the fault and bad-input suite (Integration/faults), one test at a time, with its figures
#   adapters the Hummingbird and Vapor adapters (both package traits on; builds SwiftNIO, Hummingbird
#            and Vapor once, in .build-adapters; never under a sanitizer)
#   example  the example shop's tests (Examples/test.sh: its own servers, real HTTP)
#   thread   tests and faults again under ThreadSanitizer (build folder .build-thread)
#   address  tests and faults again under AddressSanitizer and LeakSanitizer (.build-address), then
#            the leak check: tandem-stress under LeakSanitizer (and once with a planted leak, which
#            must be caught, so that the check is known to work)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_all EXIT INT TERM
cd "$TANDEM_ROOT"

phases=("$@")
[ ${#phases[@]} -gt 0 ] || phases=(tests faults adapters example thread address)
for p in "${phases[@]}"; do
  case "$p" in tests|faults|adapters|example|thread|address) ;; *) echo "unknown phase '$p' (tests, faults, adapters, example, thread, address)" >&2; exit 2 ;; esac
done

ensure_packages
export TANDEM_REQUIRE_SERVERS=1
export TSAN_OPTIONS="suppressions=$TANDEM_ROOT/Integration/tsan-suppressions.txt ${TSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$TANDEM_ROOT/Integration/lsan-suppressions.txt ${LSAN_OPTIONS:-}"

# Each phase gets fresh servers: a second run of the suite must not meet the first run's keys.
say() {
  printf '\n=== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2
  stop_all
  start_test_servers
}

# run_suite [swift build flags...]: the unit and server tests, then (if asked) the fault suite.
# Under a sanitizer the semantic suite runs against plain Redis, memcached and LocMem but not again
# over TLS, through Sentinel and on the cluster (those paths keep their own tests there): the three
# extra copies doubled the thread phase's time and pushed the shutdown tests past their limits.
run_suite() {
  local flags=("$@") skip="TandemFaultTests"
  case " ${flags[*]} " in *" --sanitize="*) skip="TandemFaultTests|RedisDeploymentSemantics" ;; esac
  swift build --build-tests "${flags[@]}"
  swift test --skip-build --disable-xctest "${flags[@]}" --skip "$skip"
}
run_faults() {
  local flags=("$@")
  swift test --skip-build --disable-xctest "${flags[@]}" --filter TandemFaultTests
}

leak_check() {
  local bin="$TANDEM_ROOT/.build-address/debug/tandem-stress"
  local args=(--redis "$TANDEM_REDIS_URL/9" --memcached "$TANDEM_MEMCACHED_SERVERS" --upstream "$TANDEM_HTTP_UPSTREAM")
  swift build --sanitize=address --scratch-path "$TANDEM_ROOT/.build-address" --product tandem-stress
  local out="$RUN_DIR/leaks.log"
  if ! ASAN_OPTIONS=detect_leaks=1 "$bin" "${args[@]}" --rounds 30 >"$out" 2>&1 || grep -q "LeakSanitizer" "$out"; then
    tail -60 "$out" >&2
    echo "leak check FAILED: tandem-stress reported leaks or errors (log above)" >&2
    return 1
  fi
  grep -E "continuations|rounds done" "$out" >&2
  # The check must be able to fail: a planted leak has to be reported.
  if ASAN_OPTIONS=detect_leaks=1 "$bin" "${args[@]}" --rounds 1 --leak-on-purpose >"$RUN_DIR/planted.log" 2>&1 \
     || ! grep -q "LeakSanitizer: detected memory leaks" "$RUN_DIR/planted.log"; then
    echo "leak check is not working: the planted leak was not reported" >&2
    return 1
  fi
  echo "leak check: no leaks in 30 rounds of tandem-stress; the planted leak was caught" >&2
}

for p in "${phases[@]}"; do
  case "$p" in
    tests)   say "unit and server tests"; run_suite ;;
    faults)  say "fault and bad-input suite"; swift build --build-tests; run_faults ;;
    adapters) say "Hummingbird and Vapor adapters"
             adapter_flags=(--traits HummingbirdAdapter,VaporAdapter --scratch-path "$TANDEM_ROOT/.build-adapters")
             swift build --build-tests "${adapter_flags[@]}"
             swift test --skip-build --disable-xctest "${adapter_flags[@]}" --filter "TandemHummingbirdTests|TandemVaporTests" ;;
    example) stop_all; printf '\n=== %s (%s)\n' "the example shop" "$(date +%H:%M:%S)" >&2
             bash "$TANDEM_ROOT/Examples/test.sh" ;;
    thread)  say "ThreadSanitizer"; run_suite --sanitize=thread --scratch-path "$TANDEM_ROOT/.build-thread"
             run_faults --sanitize=thread --scratch-path "$TANDEM_ROOT/.build-thread" ;;
    address) say "AddressSanitizer and LeakSanitizer"; run_suite --sanitize=address --scratch-path "$TANDEM_ROOT/.build-address"
             run_faults --sanitize=address --scratch-path "$TANDEM_ROOT/.build-address"
             echo "--- leak check" >&2; leak_check ;;
  esac
done
printf '\n=== all phases passed: %s (%s)\n' "${phases[*]}" "$(date +%H:%M:%S)" >&2
