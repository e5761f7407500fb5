#!/usr/bin/env bash
# System packages of the production-parity test (tests/e2e/parity_test.py, Debian/Ubuntu).
# Idempotent; the test starts its own instances on free 127.0.0.1 ports.
#   haproxy                  the ALB stand-in (X-Forwarded-For, health checks, blue/green)
#   redis-server, redis-tools  the 3-master Redis Cluster (redis-cli --cluster create)
#   postgresql               initdb/postgres for the sidecar's PostgreSQL collector
#   prometheus               the AMP stand-in (remote-write receiver, alert rules)
#   prometheus-alertmanager  pages the PagerDuty stub
#   util-linux               unshare (the gateways' own /etc/hosts) and setpriv
set -euo pipefail

need=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 ||
    need+=(prometheus-alertmanager)
{ command -v unshare && command -v setpriv; } >/dev/null 2>&1 || need+=(util-linux)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "parity: apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts some of these as services; the test starts its own.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    for svc in haproxy redis-server postgresql prometheus prometheus-alertmanager; do
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi
