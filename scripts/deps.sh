#!/usr/bin/env bash
# Install what shade needs to build and test, from Debian's packages, when missing.
# Usage: scripts/deps.sh [extra-package ...]
set -euo pipefail
pkgs=(gcc make libc6-dev pkg-config libyaml-dev libsqlite3-dev libssl-dev node-llhttp ca-certificates python3 curl
      clang libclang-rt-14-dev "$@")
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
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
