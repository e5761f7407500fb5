#!/usr/bin/env bash
# Smoke test of a deployed environment through its ALB:
#   1. health: GET $SMOKE_HEALTH_PATH (default /healthz, public) answers 200
#   2. JWT: $SMOKE_API_PATH (default /api/health) is 401 without a token and 2xx with one
#   3. tiers: a free-tier token gets 429 within $SMOKE_MAX_REQUESTS requests (limit 100/min),
#      while a pro-tier token still passes
# Tokens are HS256, signed with $JWT_SECRET for the consumer whose jwt key is
# $SMOKE_JWT_KEY (default local-dev-app, docker/gateway/kong.yml), `sub` unique per run.
#   smoke.sh BASE_URL
set -euo pipefail
cd "$(dirname "$0")/../.."
base="${1:?base URL, e.g. https://api.staging.example.com}"
base="${base%/}"
: "${JWT_SECRET:?JWT_SECRET must be set}"
health_path="${SMOKE_HEALTH_PATH:-/healthz}"
api_path="${SMOKE_API_PATH:-/api/health}"
max="${SMOKE_MAX_REQUESTS:-250}"
run="${GITHUB_RUN_ID:-local}-$$"
export DEV_JWT_KEY="${SMOKE_JWT_KEY:-local-dev-app}" DEV_TOKEN_TTL=900
failures=0
fail() { echo "::error::smoke: $*"; failures=$((failures + 1)); }
code() { curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$@" || echo 000; }

echo "smoke: health $base$health_path"
ok=0
for _ in $(seq 1 30); do
    if [ "$(code "$base$health_path")" = 200 ]; then ok=1; break; fi
    sleep 5
done
[ "$ok" = 1 ] || fail "$base$health_path did not answer 200 within 150s"

free="$(DEV_TOKEN_SUB="smoke-free-$run" bash scripts/dev-up.sh token free)"
pro="$(DEV_TOKEN_SUB="smoke-pro-$run" bash scripts/dev-up.sh token pro)"
echo "::add-mask::$free"
echo "::add-mask::$pro"

c="$(code "$base$api_path")"
[ "$c" = 401 ] || fail "$api_path without a token: $c (want 401)"
c="$(code -H "Authorization: Bearer $free" "$base$api_path")"
[[ "$c" == 2* ]] || fail "$api_path with a free-tier token: $c (want 2xx)"

echo "smoke: free tier limit (up to $max requests)"
got=""
for i in $(seq 1 "$max"); do
    c="$(code -H "Authorization: Bearer $free" "$base$api_path")"
    if [ "$c" = 429 ]; then got="$i"; break; fi
done
if [ -n "$got" ]; then
    echo "smoke: 429 after $got requests"
else
    fail "no 429 for the free tier within $max requests"
fi
c="$(code -H "Authorization: Bearer $pro" "$base$api_path")"
[[ "$c" == 2* ]] || fail "$api_path with a pro-tier token after free hit its limit: $c (want 2xx)"

if [ "$failures" -gt 0 ]; then
    echo "smoke: $failures check(s) failed"
    exit 1
fi
echo "smoke: all checks passed"
