#!/usr/bin/env bash
# Install what shade needs to build and test, from Debian's packages, when missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
pkgs=(gcc make libc6-dev pkg-config libyaml-dev libsqlite3-dev libssl-dev ca-certificates python3 curl
      clang libclang-rt-14-dev prometheus "$@")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# node and npm run the OpenAI SDK compatibility tests; any node >= 18 will do
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# the prometheus package (for promtool and a scrape test) would also start a
# Prometheus service on :9090; the tests start their own on loopback, so keep
# packages from starting services while installing (policy-rc.d, exit 101)
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
fi
rc=0
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
[ -n "$policy" ] && $SUDO rm -f "$policy"
# ... nor at the next boot
if [ $rc -eq 0 ] && [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable prometheus >/dev/null 2>&1 || true
fi
exit $rc
