#!/usr/bin/env bash
# Installs what building and testing the suite needs on a Debian machine that has only
# the Rust toolchain, Python and git. Idempotent: quiet when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "install-deps: apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# redis-server's Debian service is not used: tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi

# Per-crate needs (PostgreSQL, Prometheus, moto, ...).
for f in .ci/deps/*.sh; do
    [ -e "$f" ] || continue
    echo "install-deps: $f"
    bash "$f"
done
