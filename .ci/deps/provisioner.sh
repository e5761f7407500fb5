#!/usr/bin/env bash
# Test dependency of the `provisioner` crate: moto's standalone AWS emulator.
# Idempotent: reuses the venv when moto_server is already installed in it.
# Tests find the server through $MOTO_SERVER, then this venv, then PATH.
set -euo pipefail

VENV="${PROVISIONER_MOTO_VENV:-${HOME}/.cache/edge-suite/moto-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "${VENV}/bin/moto_server" ]; then
    mkdir -p "$(dirname "${VENV}")"
    "${PY}" -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --upgrade pip
    "${VENV}/bin/pip" install --quiet 'moto[server]>=5.1,<6'
fi

"${VENV}/bin/moto_server" --help >/dev/null
echo "moto_server: ${VENV}/bin/moto_server ($("${VENV}/bin/pip" show moto 2>/dev/null | sed -n 's/^Version: //p'))"
# Make it visible to later CI steps when running under a runner that supports it.
if [ -n "${GITHUB_ENV:-}" ]; then
    echo "MOTO_SERVER=${VENV}/bin/moto_server" >> "${GITHUB_ENV}"
fi
