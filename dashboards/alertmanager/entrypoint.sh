#!/bin/sh
# Container entrypoint for Alertmanager: writes the PagerDuty Events API v2 routing key from
# the environment to the file alertmanager.yml reads (routing_key_file), then execs
# Alertmanager with the arguments given (default: the config next to this script).
#
#   PAGERDUTY_ROUTING_KEY   required: the integration key (ECS: a task-definition secret)
#   PAGERDUTY_KEY_FILE      default /etc/alertmanager/secrets/pagerduty_routing_key
#   ALERTMANAGER_BIN        default alertmanager (prometheus-alertmanager on Debian)
set -eu

key_file="${PAGERDUTY_KEY_FILE:-/etc/alertmanager/secrets/pagerduty_routing_key}"
if [ -z "${PAGERDUTY_ROUTING_KEY:-}" ]; then
    echo "entrypoint: PAGERDUTY_ROUTING_KEY is not set; critical alerts could not be paged" >&2
    exit 64
fi
mkdir -p "$(dirname "$key_file")"
umask 077
# No trailing newline: Alertmanager uses the file's content as the key.
printf '%s' "$PAGERDUTY_ROUTING_KEY" > "$key_file.tmp"
mv "$key_file.tmp" "$key_file"
unset PAGERDUTY_ROUTING_KEY

bin="${ALERTMANAGER_BIN:-alertmanager}"
if [ "$#" -eq 0 ]; then
    set -- --config.file="$(dirname "$0")/alertmanager.yml" --storage.path=/alertmanager
fi
exec "$bin" "$@"
