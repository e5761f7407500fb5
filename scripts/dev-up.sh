#!/usr/bin/env bash
# The example stack without Docker: the gateway (docker/gateway/kong.yml, the same file
# docker-compose.yml uses), two example upstreams, the metrics-agent, and Redis and
# Prometheus when they are installed. Prints the URLs and a token for each tier;
# Ctrl-C stops everything.
#
#   bash scripts/dev-up.sh                  build (release), start, print, wait for Ctrl-C
#   bash scripts/dev-up.sh token [TIER]     print one token (free|pro|enterprise) and exit
#
# Settings come from the environment, then .env, then .env.example (JWT_SECRET, ...).
# Knobs (environment):
#   DEV_HOST=127.0.0.1   DEV_GATEWAY_PORT=8000  DEV_STATUS_PORT=8100
#   DEV_UPSTREAM_PORTS="9001 9002"  DEV_AGENT_PORT=9464  DEV_REDIS_PORT=6379
#   DEV_PROMETHEUS_PORT=9090
#   DEV_REDIS / DEV_PROMETHEUS / DEV_METRICS_AGENT = auto|off  (auto: when available)
#   DEV_PROFILE=release|debug   DEV_SKIP_BUILD=1 (use binaries already built)
#   DEV_STATE_DIR=tmp/dev-stack (logs, generated configs, tokens.env, pids)
#   DEV_TOKEN_TTL=86400 (seconds)  DEV_TOKEN_SUB (token's `sub`, default dev-TIER-user)
#   DEV_JWT_KEY=local-dev-app (token's `iss`: the consumer's jwt key)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# --- settings: environment > .env > .env.example --------------------------------------
load_env_file() {
    local file="$1" line key val
    [ -f "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line%$'\r'}"
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[2]}"
        val="${BASH_REMATCH[3]}"
        val="${val%\"}"; val="${val#\"}"; val="${val%\'}"; val="${val#\'}"
        [ -n "${!key+x}" ] || export "$key=$val"
    done < "$file"
}
load_env_file .env
load_env_file .env.example
# dev-up finds the plugins this build lacks by itself (below).
unset GATEWAY_IGNORE_PLUGINS
: "${JWT_SECRET:?JWT_SECRET is not set (copy .env.example to .env)}"
export JWT_SECRET
JWT_KEY="${DEV_JWT_KEY:-local-dev-app}"
TOKEN_TTL="${DEV_TOKEN_TTL:-86400}"
TIERS=(free pro enterprise)

# An HS256 JWT for the `local-dev-app` consumer of docker/gateway/kong.yml:
# iss = the consumer's jwt key, sub, tier, iat, exp.
make_token() {
    python3 - "$1" "$JWT_KEY" "$TOKEN_TTL" "${DEV_TOKEN_SUB:-dev-$1-user}" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
tier, key, ttl, sub = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def seg(obj):
    return b64(json.dumps(obj, separators=(",", ":")).encode())
now = int(time.time())
claims = {"iss": key, "sub": sub, "tier": tier, "iat": now, "exp": now + ttl}
head = seg({"alg": "HS256", "typ": "JWT"}) + "." + seg(claims)
sig = hmac.new(os.environ["JWT_SECRET"].encode(), head.encode(), hashlib.sha256).digest()
print(head + "." + b64(sig))
PY
}

if [ "${1:-}" = "token" ]; then
    tier="${2:-free}"
    case " ${TIERS[*]} " in *" $tier "*) ;; *) echo "unknown tier '$tier' (${TIERS[*]})" >&2; exit 2 ;; esac
    make_token "$tier"
    exit 0
fi
if [ $# -gt 0 ]; then
    sed -n '2,21s/^# \{0,1\}//p' "$0" >&2
    exit 2
fi

HOST="${DEV_HOST:-127.0.0.1}"
GW_PORT="${DEV_GATEWAY_PORT:-8000}"
STATUS_PORT="${DEV_STATUS_PORT:-8100}"
read -r -a UP_PORTS <<< "${DEV_UPSTREAM_PORTS:-9001 9002}"
AGENT_PORT="${DEV_AGENT_PORT:-9464}"
REDIS_PORT_LOCAL="${DEV_REDIS_PORT:-6379}"
PROM_PORT="${DEV_PROMETHEUS_PORT:-9090}"
PROFILE="${DEV_PROFILE:-release}"
STATE="${DEV_STATE_DIR:-$ROOT/tmp/dev-stack}"
mkdir -p "$STATE/logs"
STATE="$(cd "$STATE" && pwd)"
say() { printf 'dev-up: %s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------
need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ] && [ "${DEV_SKIP_BUILD:-0}" != 1 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    say "installing ${need[*]} (apt-get)"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { say "python3 is needed (tokens, port checks)"; exit 1; }
command -v cargo >/dev/null 2>&1 || { say "cargo is needed: install Rust (https://rustup.rs)"; exit 1; }

# --- build -----------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')}"
case "$PROFILE" in
    release) profile_flag=(--release) ;;
    debug | dev) PROFILE=debug; profile_flag=() ;;
    *) profile_flag=(--profile "$PROFILE") ;;
esac
BIN="$TARGET_DIR/$PROFILE"
if [ "${DEV_SKIP_BUILD:-0}" != 1 ] && [ -x "$BIN/provisioner" ]; then
    # The workspace was built (`cargo build --workspace`): build it the same way, so cargo
    # finds it fresh instead of rebuilding shared dependencies for another feature set.
    say "building the workspace ($PROFILE; nothing to do when it is up to date)"
    cargo build "${profile_flag[@]}" --workspace --bins
    touch "$STATE/.agent-ok"
elif [ "${DEV_SKIP_BUILD:-0}" != 1 ]; then
    say "building the gateway ($PROFILE; the first build takes a few minutes)"
    cargo build "${profile_flag[@]}" -p gateway --bins
    if [ "${DEV_METRICS_AGENT:-auto}" != off ]; then
        say "building the metrics-agent ($PROFILE)"
        if ! cargo build "${profile_flag[@]}" -p metrics-agent > "$STATE/logs/metrics-agent-build.log" 2>&1; then
            say "metrics-agent did not build; starting without it (see $STATE/logs/metrics-agent-build.log)"
            rm -f "$STATE/.agent-ok"
        else
            touch "$STATE/.agent-ok"
        fi
    fi
fi
for b in gateway echo-upstream; do
    [ -x "$BIN/$b" ] || { say "$BIN/$b is missing (build: cargo build ${profile_flag[*]} -p gateway --bins)"; exit 1; }
done

# --- ports -----------------------------------------------------------------------------
port_free() {
    python3 -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try: s.bind((sys.argv[1], int(sys.argv[2])))
except OSError: sys.exit(1)' "$HOST" "$1"
}
for p in "$GW_PORT:DEV_GATEWAY_PORT" "$STATUS_PORT:DEV_STATUS_PORT" "${UP_PORTS[0]}:DEV_UPSTREAM_PORTS" "${UP_PORTS[1]}:DEV_UPSTREAM_PORTS"; do
    port_free "${p%%:*}" || { say "port ${p%%:*} on $HOST is in use (choose another with ${p#*:}=...)"; exit 1; }
done

# --- processes -------------------------------------------------------------------------
pids=()
names=()
: > "$STATE/pids"
start() { # name, command...
    local name="$1"; shift
    "$@" > "$STATE/logs/$name.log" 2>&1 &
    pids+=($!); names+=("$name")
    echo "$! $name" >> "$STATE/pids"
}
stopping=0
cleanup() {
    [ "$stopping" = 0 ] || return 0
    stopping=1
    trap '' INT TERM
    echo
    say "stopping ${names[*]:-nothing}"
    local i
    for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for _ in $(seq 1 100); do
        local alive=0
        for i in "${!pids[@]}"; do kill -0 "${pids[$i]}" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} did not stop in 10s: killing it"
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
    done
    wait 2>/dev/null || true
    : > "$STATE/pids"
    say "stopped"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_http() { # url, seconds, name
    local deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    say "$3 is not ready at $1 after $2s; last lines of $STATE/logs/$3.log:"
    tail -n 20 "$STATE/logs/$3.log" 2>/dev/null | sed 's/^/    /'
    return 1
}

i=1
for p in "${UP_PORTS[@]}"; do
    start "upstream-$i" "$BIN/echo-upstream" --listen "$HOST:$p" --name "auth-$i"
    i=$((i + 1))
done
export AUTH_UPSTREAM_1="$HOST:${UP_PORTS[0]}" AUTH_UPSTREAM_2="$HOST:${UP_PORTS[1]}"

# Redis: our own throwaway server (no persistence) when redis-server is installed.
export REDIS_HOST="$HOST" REDIS_PORT="$REDIS_PORT_LOCAL" REDIS_PASSWORD="${REDIS_PASSWORD:-}" REDIS_SSL=false
export RATE_LIMIT_POLICY=local
redis_url=""
if [ "${DEV_REDIS:-auto}" != off ] && command -v redis-server >/dev/null 2>&1; then
    if port_free "$REDIS_PORT_LOCAL"; then
        redis_args=(--bind "$HOST" --port "$REDIS_PORT_LOCAL" --save "" --appendonly no --dir "$STATE")
        [ -z "$REDIS_PASSWORD" ] || redis_args+=(--requirepass "$REDIS_PASSWORD")
        start redis redis-server "${redis_args[@]}"
        RATE_LIMIT_POLICY=redis
        redis_url="redis://$HOST:$REDIS_PORT_LOCAL"
    else
        say "port $REDIS_PORT_LOCAL is in use: not starting Redis (DEV_REDIS_PORT=...); rate limits are per process"
    fi
else
    say "Redis: not installed (apt-get install redis-server) or DEV_REDIS=off; rate limits are per process"
fi

# Plugins this gateway build does not implement yet are skipped, loudly: the list comes
# from `gateway check`, so it shrinks by itself as plugins land.
ignore=()
if ! out="$("$BIN/gateway" check --config docker/gateway/kong.yml 2>&1)"; then
    # shellcheck disable=SC2016
    mapfile -t ignore < <(printf '%s\n' "$out" | sed -n 's/.*plugin `\([a-z0-9_-]*\)` is not implemented by this gateway.*/\1/p' | sort -u)
    args=(); for p in "${ignore[@]}"; do args+=(--ignore-plugin "$p"); done
    if ! out2="$("$BIN/gateway" check --config docker/gateway/kong.yml "${args[@]}" 2>&1)"; then
        say "docker/gateway/kong.yml does not load:"; printf '%s\n' "$out2" >&2; exit 1
    fi
    say "NOTE: this gateway build does not implement: ${ignore[*]} (skipped with --ignore-plugin)"
fi
gw_args=(run --config docker/gateway/kong.yml)
for p in "${ignore[@]}"; do gw_args+=(--ignore-plugin "$p"); done
GATEWAY_PROXY_LISTEN="$HOST:$GW_PORT" GATEWAY_STATUS_LISTEN="$HOST:$STATUS_PORT" \
GATEWAY_DRAIN_TIMEOUT="${GATEWAY_DRAIN_TIMEOUT:-5}" GATEWAY_WORKERS="${GATEWAY_WORKERS:-2}" \
    start gateway "$BIN/gateway" "${gw_args[@]}"

# Prometheus: remote-write receiver plus the alert rules from dashboards/.
prom_url=""
if [ "${DEV_PROMETHEUS:-auto}" != off ] && command -v prometheus >/dev/null 2>&1; then
    if port_free "$PROM_PORT"; then
        mkdir -p "$STATE/prometheus-data"
        rules="rule_files: []"
        [ ! -f dashboards/prometheus/alerts.yml ] || rules="rule_files: ['$ROOT/dashboards/prometheus/alerts.yml']"
        cat > "$STATE/prometheus.yml" <<EOF
# Generated by scripts/dev-up.sh. Samples arrive by remote_write from the metrics-agent.
global:
  evaluation_interval: 15s
$rules
scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ['$HOST:$PROM_PORT']
EOF
        start prometheus prometheus --config.file="$STATE/prometheus.yml" \
            --storage.tsdb.path="$STATE/prometheus-data" --storage.tsdb.retention.time=1d \
            --web.listen-address="$HOST:$PROM_PORT" --web.enable-remote-write-receiver \
            --web.enable-lifecycle
        prom_url="http://$HOST:$PROM_PORT"
    else
        say "port $PROM_PORT is in use: not starting Prometheus (DEV_PROMETHEUS_PORT=...)"
    fi
else
    say "Prometheus: not installed (apt-get install prometheus) or DEV_PROMETHEUS=off"
fi

# metrics-agent: scrapes the gateway, ships to the local Prometheus.
agent_url=""
if [ "${DEV_METRICS_AGENT:-auto}" = off ]; then
    :
elif [ ! -x "$BIN/metrics-agent" ] || { [ "${DEV_SKIP_BUILD:-0}" != 1 ] && [ ! -e "$STATE/.agent-ok" ]; }; then
    say "metrics-agent: not built; starting without it"
elif ! port_free "$AGENT_PORT"; then
    say "port $AGENT_PORT is in use: not starting the metrics-agent (DEV_AGENT_PORT=...)"
else
    {
        echo "# Generated by scripts/dev-up.sh."
        echo "global:"
        echo "  scrape_interval: 5s"
        echo "  scrape_timeout: 4s"
        echo "  external_labels: {env: local}"
        echo "scrape_configs:"
        echo "- job_name: gateway"
        echo "  static_configs:"
        echo "  - targets: ['$HOST:$STATUS_PORT']"
        if [ -n "$prom_url" ]; then
            echo "remote_write:"
            echo "- name: local-prometheus"
            echo "  url: $prom_url/api/v1/write"
        fi
    } > "$STATE/metrics-agent.yml"
    agent_args=(run --config "$STATE/metrics-agent.yml" --wal-dir "$STATE/metrics-agent-wal" --listen "$HOST:$AGENT_PORT" --no-ecs)
    [ -z "$redis_url" ] || agent_args+=(--redis "$HOST:$REDIS_PORT_LOCAL")
    if "$BIN/metrics-agent" check --config "$STATE/metrics-agent.yml" > "$STATE/logs/metrics-agent-check.log" 2>&1; then
        start metrics-agent "$BIN/metrics-agent" "${agent_args[@]}"
        agent_url="http://$HOST:$AGENT_PORT"
    else
        say "metrics-agent rejects its config; starting without it:"; sed 's/^/    /' "$STATE/logs/metrics-agent-check.log"
    fi
fi

# --- readiness -------------------------------------------------------------------------
for i in "${!UP_PORTS[@]}"; do wait_http "http://$HOST:${UP_PORTS[$i]}/health" 30 "upstream-$((i + 1))" || exit 1; done
wait_http "http://$HOST:$STATUS_PORT/status/ready" 60 gateway || exit 1
[ -z "$prom_url" ] || wait_http "$prom_url/-/ready" 60 prometheus || prom_url=""
[ -z "$agent_url" ] || wait_http "$agent_url/ready" 30 metrics-agent || agent_url=""

: > "$STATE/tokens.env"
for t in "${TIERS[@]}"; do
    tok="$(make_token "$t")"
    printf 'TOKEN_%s=%s\n' "$(tr '[:lower:]' '[:upper:]' <<< "$t")" "$tok" >> "$STATE/tokens.env"
done
# shellcheck disable=SC1091
. "$STATE/tokens.env"

GW="http://$HOST:$GW_PORT"
cat <<MSG

  gateway        $GW
  status         http://$HOST:$STATUS_PORT/status   /status/ready   /metrics
  upstreams      http://$HOST:${UP_PORTS[0]}   http://$HOST:${UP_PORTS[1]}
  redis          ${redis_url:-not running (rate limits per process)}
  prometheus     ${prom_url:-not running}${prom_url:+   alerts: $prom_url/alerts}
  metrics-agent  ${agent_url:-not running}${agent_url:+/metrics}
  grafana        not part of the no-Docker stack: \`docker compose up\` serves it on http://localhost:3000
  logs           $STATE/logs/

  Tokens (HS256, valid ${TOKEN_TTL}s; also in $STATE/tokens.env; more: bash scripts/dev-up.sh token pro):
    free        (100/min)   $TOKEN_FREE
    pro        (1000/min)   $TOKEN_PRO
    enterprise (5000/min)   $TOKEN_ENTERPRISE

  Try:
    curl -i $GW/api/hello -H "Authorization: Bearer $TOKEN_FREE"
    curl -i -X POST $GW/auth/login
MSG
if [ "${#ignore[@]}" -gt 0 ]; then
    echo "  NOTE: not enforced by this gateway build yet: ${ignore[*]}"
fi
echo
say "ready; Ctrl-C stops everything"

# Stay until Ctrl-C, or until a process of the stack dies.
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} exited; last lines of $STATE/logs/${names[$i]}.log:"
            tail -n 20 "$STATE/logs/${names[$i]}.log" | sed 's/^/    /'
            exit 1
        fi
    done
    sleep 1 &
    wait $! || true
done
