#!/usr/bin/env bash
# Test dependency of the `suite-tests` crate (dashboards and alerts): Debian's Prometheus
# (server + promtool) and Alertmanager (amtool). Idempotent: installs only what is missing.
# The tests start their own Prometheus on a free loopback port with their own config and
# data directory; the system services the packages may start are stopped and disabled.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ "${#need[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    echo "dashboards deps: apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null
    # policy-rc.d keeps dpkg from starting the services where invoke-rc.d honours it.
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The packaged services are not used (they would hold :9090/:9093 and a data dir).
if command -v systemctl >/dev/null 2>&1; then
    for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
fi

echo "prometheus: $(prometheus --version 2>&1 | head -n1)"
echo "promtool: $(command -v promtool)"
echo "amtool: $(amtool --version 2>&1 | head -n1)"
