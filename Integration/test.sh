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
ensure_django_python
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
  # The near cache's server suites (RedisNearCacheTests, RedisNearCacheSemantics,
  # RedisNearCacheOwnServerTests: a million keys read, a server restarted) run in the tests phase
  # only: with them the thread phase's loops were saturated (commands of other suites timed out at
  # 10 s); its rules without a server (NearCacheTests) run under the sanitizers too. So do the Django
  # sharing tests (DjangoSharingTests: 30 Python processes starting Django took the thread phase's two
  # cores from the other suites, and a one-second command timed out); the codecs' own tests (pickle,
  # JSON, compressors, fuzzing) run under the sanitizers.
  case " ${flags[*]} " in *" --sanitize="*) skip="TandemFaultTests|RedisDeploymentSemantics|RedisNearCache|DjangoSharingTests" ;; esac
  swift build --build-tests "${flags[@]}"
  with_reports swift test --skip-build --disable-xctest "${flags[@]}" --skip "$skip"
}
run_faults() {
  local flags=("$@")
  with_reports swift test --skip-build --disable-xctest "${flags[@]}" --filter TandemFaultTests
}

# with_reports command...: runs the command with its output also kept in a log. When it fails, every
# sanitizer report in that log is printed once more at the very end (frames inside the runtime and
# compiler-generated thunks left out), so that the last lines of a failed CI run say what was found.
with_reports() {
  local log="$RUN_DIR/run-$(date +%s%N).log" rc=0
  "$@" 2>&1 | tee "$log" || rc=$?
  if [ "$rc" -ne 0 ] && grep -qE '^(WARNING: ThreadSanitizer|==[0-9]+==ERROR)' "$log"; then
    printf '\n--- sanitizer reports of the failed run (full log: %s)\n' "$log" >&2
    awk '/^(WARNING: ThreadSanitizer|==[0-9]+==ERROR)/ { p = 1 } p { print } /^SUMMARY:/ { p = 0 }' "$log" \
      | grep -vE '<compiler-generated>|<null>|crtstuff\.c|^\s*$' | sed -E 's/ \(BuildId: [0-9a-f]+\)//; s/ \([A-Za-z_.-]+\+0x[0-9a-f]+\)//' \
      | head -120 >&2
  fi
  return "$rc"
}

# check_docs: the public modules and the Tandem product's catalog build with swift-docc-plugin, as
# one archive, with warnings as errors (plugin_docs, Integration/lib.sh). The articles' Swift blocks
# are compiled with the README's.
check_docs() {
  plugin_docs "$RUN_DIR/docs" || return 1
  echo "docs: the public modules and the Tandem catalog build without a warning" >&2
}

# Tandem's own code takes its locks with `locked` (Sources/TandemLoop/Locked.swift), never with
# `Mutex.withLock` (files that use a Mutex are checked; NSLock's is fine): a contended Mutex changes hands inside the kernel, where ThreadSanitizer cannot see
# it, and every access it guards then looks like a race (the thread phase failed that way).
lint_locks() {
  local found
  found=$(grep -rlE 'Mutex[<(]' Sources Tests Integration --include='*.swift' | grep -v 'Sources/TandemLoop/Locked.swift' \
    | xargs -r grep -nHE '\.withLock[ ({]' || true)
  if [ -n "$found" ]; then
    printf '%s\n' "$found" >&2
    echo "use Mutex.locked, not withLock, in Tandem's sources and tests (see Sources/TandemLoop/Locked.swift)" >&2
    return 1
  fi
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

# The chart command (Integration/charts.py) draws every chart from the committed results
# (charts/results.jsonl) into a scratch folder, and refuses a file that is not JSON lines.
check_charts() {
  python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q "matplotlib>=3.8" >&2 \
    || python3 -m pip install -q --break-system-packages "matplotlib>=3.8" >&2
  local out="$RUN_DIR/charts"
  python3 "$TANDEM_ROOT/Integration/charts.py" "$TANDEM_ROOT/charts/results.jsonl" --out "$out" >&2
  for f in views gets fanout near-cache ratios; do
    grep -q "<svg" "$out/$f.svg" || { echo "charts: $f.svg was not drawn" >&2; return 1; }
  done
  printf '{"scenario": "x", "ratio": 1}\n{not json\n' > "$RUN_DIR/bad.jsonl"
  if python3 "$TANDEM_ROOT/Integration/charts.py" "$RUN_DIR/bad.jsonl" --out "$out" 2>/dev/null; then
    echo "charts: a file with a broken line was accepted" >&2
    return 1
  fi
  echo "charts: five SVGs drawn from charts/results.jsonl; a broken line refused" >&2
}

lint_locks
# The README's code blocks, as test sources: a snippet that no longer compiles fails the build.
python3 "$TANDEM_ROOT/Integration/readme_snippets.py"
for p in "${phases[@]}"; do
  case "$p" in
    tests)   say "unit and server tests"; run_suite; check_charts; check_docs ;;
    faults)  say "fault and bad-input suite"; swift build --build-tests; run_faults ;;
    adapters) say "Hummingbird and Vapor adapters"
             adapter_flags=(--traits HummingbirdAdapter,VaporAdapter --scratch-path "$TANDEM_ROOT/.build-adapters")
             swift build --build-tests "${adapter_flags[@]}" "${adapter_symbol_flags[@]}"
             swift test --skip-build --disable-xctest "${adapter_flags[@]}" --filter "TandemHummingbirdTests|TandemVaporTests"
             convert_docs "$RUN_DIR/docs-adapters" "$ADAPTER_SYMBOL_GRAPHS" "${ADAPTER_DOC_MODULES[@]}"
             echo "docs: the adapters' modules and catalogs convert without a warning" >&2 ;;
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
