#!/usr/bin/env bash
# The test command: installs what is missing, starts real servers on free loopback ports, runs the
# whole Swift test suite with TANDEM_REQUIRE_SERVERS=1 (a missing server is a failure, never a skip),
# and stops every server it started, also on failure.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_all EXIT INT TERM
cd "$TANDEM_ROOT"

ensure_packages
start_test_servers
export TANDEM_REQUIRE_SERVERS=1
# TANDEM_SANITIZE=thread|address runs the same suite under a sanitizer (in its own build folder).
build=()
if [ -n "${TANDEM_SANITIZE:-}" ]; then
  build=(--sanitize="$TANDEM_SANITIZE" --scratch-path "$TANDEM_ROOT/.build-$TANDEM_SANITIZE")
  export TSAN_OPTIONS="suppressions=$TANDEM_ROOT/Integration/tsan-suppressions.txt ${TSAN_OPTIONS:-}"
fi
swift build --build-tests "${build[@]}"
swift test --skip-build --disable-xctest "${build[@]}" "$@"
