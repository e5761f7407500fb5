#!/usr/bin/env bash
# Test dependencies of the `suite-tests` crate (dashboards and alerts), Debian bookworm:
#   prometheus               server (scrape, remote-write receiver, rules) and promtool
#   prometheus-alertmanager  amtool
#   redis-server, postgresql (+ postgresql-contrib: pg_stat_statements), util-linux
#   (setpriv: PostgreSQL refuses to run as root)   the metrics-agent path of the test
# Idempotent: installs only what is missing. The tests start their own servers on free
# loopback ports with their own config and data directories; the system services the
# packages may start are stopped and disabled.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    echo "dashboards deps: apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The packaged services are not used (they would hold :9090/:9093 and a data dir).
if command -v systemctl >/dev/null 2>&1; then
    for svc in prometheus prometheus-alertmanager prometheus-node-exporter redis-server postgresql; do
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi

echo "prometheus: $(prometheus --version 2>&1 | head -n1)"
echo "promtool: $(command -v promtool)"
echo "amtool: $(amtool --version 2>&1 | head -n1)"
echo "redis-server: $(redis-server --version | head -n1)"
echo "postgresql: $(echo /usr/lib/postgresql/*/bin)"
