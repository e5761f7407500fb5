#!/usr/bin/env bash
# System packages the metrics-agent tests need (Debian bookworm). Idempotent.
#   prometheus    - remote-write receiver in the end-to-end tests and the benchmark; its
#                   promtool checks the prometheus.yml corpus (tests/corpus.rs)
#   postgresql    - real server for the PostgreSQL collector test (initdb/postgres + pg_stat_statements)
#   redis-server  - real server for the Redis collector tests
#   util-linux    - setpriv, to run PostgreSQL as the postgres user when tests run as root
# moto_server (tests/ec2_sd.rs) comes from .ci/deps/provisioner.sh (scripts/install-deps.sh runs both).
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql postgresql-contrib)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)

if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # shellcheck disable=SC2207
  need=($(printf '%s\n' "${need[@]}" | sort -u))
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The Debian packages may start system services; the tests start their own instances on
# free ports and do not need them.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in prometheus redis-server postgresql; do
    ${SUDO:-} systemctl stop "$svc" >/dev/null 2>&1 || true
  done
fi
