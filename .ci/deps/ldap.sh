#!/usr/bin/env bash
# Test dependency of the gateway's ldap-auth plugin (gateway/tests/it/ldap_auth.rs), Debian
# or Ubuntu:
#   slapd       OpenLDAP server: the test starts its own (`slapd -f <temp slapd.conf>`) on
#               free loopback ports, with a directory made by `slapadd`
#   ldap-utils  ldapwhoami/ldapsearch, to look at that server by hand
# Idempotent: installs only what is missing. The packaged service is stopped and
# disabled; on Ubuntu its AppArmor profile (which confines slapd to /etc/ldap and
# /var/lib/ldap, so a config in a temp dir could not be read) is unloaded.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

need=()
[ -x /usr/sbin/slapd ] || command -v slapd >/dev/null 2>&1 || need+=(slapd)
[ -x /usr/sbin/slapadd ] || command -v slapadd >/dev/null 2>&1 || need+=(slapd)
command -v ldapwhoami >/dev/null 2>&1 || need+=(ldap-utils)
if [ "${#need[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    echo "ldap deps: apt-get install ${need[*]}"
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now slapd >/dev/null 2>&1 || true
fi
if [ -f /etc/apparmor.d/usr.sbin.slapd ] && command -v apparmor_parser >/dev/null 2>&1; then
    $SUDO apparmor_parser -R /etc/apparmor.d/usr.sbin.slapd >/dev/null 2>&1 || true
    $SUDO mkdir -p /etc/apparmor.d/disable
    $SUDO ln -sf /etc/apparmor.d/usr.sbin.slapd /etc/apparmor.d/disable/usr.sbin.slapd
fi

echo "slapd: $( (/usr/sbin/slapd -VV 2>&1 || true) | head -n1)"
