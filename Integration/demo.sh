#!/usr/bin/env bash
# The main job: builds Tandem and runs `tandem demo` on the embedded LocMem default (and, for the
# upstream part, a local HTTP upstream it starts itself).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap stop_all EXIT INT TERM
cd "$TANDEM_ROOT"

ensure_packages
args=()
if [ -f "$TANDEM_ROOT/Integration/upstream.py" ]; then
  port=$(free_port)
  start_background upstream "$port" python3 "$TANDEM_ROOT/Integration/upstream.py" --port "$port"
  args+=(--upstream "http://127.0.0.1:$port")
fi
swift run -c release tandem demo "${args[@]}" "$@"
