#!/usr/bin/env bash
# Test dependencies of the `provisioner` crate: moto's standalone AWS emulator
# (`moto[server]` from PyPI), which the provisioner's end-to-end tests start on a
# free loopback port, and amtool (Debian `prometheus-alertmanager`), which checks
# the rendered AMP Alertmanager definition.
#
# Idempotent: reuses the venv when moto_server is already installed in it.
# Tests find the server through $MOTO_SERVER, then this venv
# ($HOME/.cache/edge-suite/moto-venv), then ~/.local/bin, then PATH.
set -euo pipefail

if ! command -v amtool >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "provisioner deps: apt-get install prometheus-alertmanager (amtool)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager >/dev/null
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now prometheus-alertmanager >/dev/null 2>&1 || true
    fi
fi
echo "amtool: $(command -v amtool)"

VENV="${PROVISIONER_MOTO_VENV:-${HOME}/.cache/edge-suite/moto-venv}"
PY="${PYTHON:-python3}"
SPEC='moto[server]>=5.1,<6'

if [ -x "${VENV}/bin/moto_server" ]; then
    BIN="${VENV}/bin/moto_server"
elif mkdir -p "$(dirname "${VENV}")" && "${PY}" -m venv "${VENV}" 2>/dev/null; then
    "${VENV}/bin/python" -m pip install --quiet --upgrade pip
    "${VENV}/bin/python" -m pip install --quiet "${SPEC}"
    BIN="${VENV}/bin/moto_server"
else
    # No venv module (e.g. Debian without python3-venv): a user install.
    rm -rf "${VENV}"
    "${PY}" -m pip install --quiet --user "${SPEC}" 2>/dev/null ||
        "${PY}" -m pip install --quiet --user --break-system-packages "${SPEC}"
    BIN="$("${PY}" -m site --user-base)/bin/moto_server"
fi

"${BIN}" --help >/dev/null
echo "moto_server: ${BIN}"
# Make it visible to later steps of runners that support it.
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "MOTO_SERVER=${BIN}" >> "${GITHUB_ENV}"
fi
