#!/usr/bin/env bash
# Starts the local stack without Docker: two example upstreams and the gateway with
# gateway/examples/kong.yml. Prints the URLs; Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --release -p gateway --bins
BIN="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')}/release"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$BIN/echo-upstream" --listen 127.0.0.1:9001 --name auth-1 & pids+=($!)
"$BIN/echo-upstream" --listen 127.0.0.1:9002 --name auth-2 & pids+=($!)
GATEWAY_PROXY_LISTEN="${GATEWAY_PROXY_LISTEN:-127.0.0.1:8000}" \
GATEWAY_STATUS_LISTEN="${GATEWAY_STATUS_LISTEN:-127.0.0.1:8100}" \
    "$BIN/gateway" run --config gateway/examples/kong.yml & pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:8100/status/ready && break; sleep 0.1; done
cat <<MSG

  gateway   http://127.0.0.1:8000   (try: curl -i http://127.0.0.1:8000/api/hello)
  status    http://127.0.0.1:8100/status   /status/ready   /metrics
  upstreams http://127.0.0.1:9001  http://127.0.0.1:9002

  Ctrl-C stops everything.
MSG
wait
