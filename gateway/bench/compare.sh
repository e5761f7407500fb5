#!/usr/bin/env bash
# Gateway vs HAProxy / nginx and the direct upstream, side by side in ONE run, using the
# bench-peers harness (wrk, loopback, proxy pinned to one core, load generator and
# upstream on the other). Results: a table on stdout and JSON under $OUT.
#
#   bash gateway/bench/compare.sh                # ROUNDS=3 by default
#   PEERS="haproxy-plain haproxy-full" ROUNDS=1 bash gateway/bench/compare.sh
#
# Targets added to the harness:
#   gateway-plain   plain reverse proxy, round-robin over the two echo targets
#   gateway-policy  JWT HS256 (exp required) + CORS allow-list + round-robin with
#                   active health checks: the same policy path as haproxy-full
#                   (plus rate limiting per `sub` once the rate-limiting plugin is present)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS_DIR="${BENCH_PEERS:-$ROOT/../shared/bench-peers}"
OUT="${OUT:-/tmp/gateway-bench}"
mkdir -p "$OUT"
cd "$ROOT"
bash "$PEERS_DIR/setup.sh"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release -p gateway --bins >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/gateway"

cp gateway/bench/configs/plain.yml "$OUT/plain.yml"

RL_PLUGIN=""
if "$BIN" check --config /dev/stdin >/dev/null 2>&1 <<'YAML'
_format_version: "3.0"
plugins:
- name: rate-limiting
  config: {minute: 6000000, limit_by: consumer, policy: local}
YAML
then
RL_PLUGIN='- name: rate-limiting
  config: {second: 100000, limit_by: consumer, policy: local}'
fi

{ cat gateway/bench/configs/policy.yml; [ -z "$RL_PLUGIN" ] || echo "$RL_PLUGIN"; } > "$OUT/policy.yml"
"$BIN" check --config "$OUT/plain.yml" >&2
"$BIN" check --config "$OUT/policy.yml" >&2

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
start() { # name port config status-port
    # Pinned at launch so every thread (not only the main one) stays on the proxy core.
    GATEWAY_LOG=warn taskset -c "${PROXY_CPUS:-1}" "$BIN" run --config "$3" --proxy-listen "127.0.0.1:$2" \
        --status-listen "127.0.0.1:$4" --workers 1 --access-log off >"$OUT/$1.log" 2>&1 &
    pids+=($!)
}
start gateway-plain 18300 "$OUT/plain.yml" 18310
start gateway-policy 18301 "$OUT/policy.yml" 18311
for p in 18310 18311; do
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/health" && break; sleep 0.1; done
done
sleep 1
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
echo "idle RSS: gateway-plain $(rss_kb "${pids[0]}") kB, gateway-policy $(rss_kb "${pids[1]}") kB" | tee "$OUT/rss.txt"

PIN_PIDS="${pids[*]}" RESULTS_DIR="$OUT/results" ROUNDS="${ROUNDS:-3}" \
    bash "$PEERS_DIR/run.sh" \
    gateway-plain=http://127.0.0.1:18300/api/echo \
    gateway-policy=http://127.0.0.1:18301/api/echo | tee "$OUT/run.txt"
echo "after load RSS: gateway-plain $(rss_kb "${pids[0]}") kB, gateway-policy $(rss_kb "${pids[1]}") kB" | tee -a "$OUT/rss.txt"
