#!/usr/bin/env bash
# run.sh — compatibility tests with the official openai SDK (make check-sdk).
# Installs the pinned SDK from the committed lockfile when node_modules is
# missing or stale, then runs compat.test.mjs with node's built-in runner.
# SHADE_BIN selects the binary under test (default: bin/shade).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

# resolve SHADE_BIN against the caller's directory before changing it
bin="${SHADE_BIN:-$root/bin/shade}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
if [ ! -x "$bin" ]; then
    echo "check-sdk: $bin is not an executable (run make, or set SHADE_BIN)" >&2
    exit 1
fi
export SHADE_BIN="$bin"

for tool in node npm; do
    command -v "$tool" >/dev/null || { echo "check-sdk: $tool not found (need Node >= 20)" >&2; exit 1; }
done

cd "$here"

# node_modules is stale when npm's record of the install (the hidden
# lockfile) is missing or older than package.json / package-lock.json, or
# when the installed openai is not the locked version.
stale() {
    local hidden=node_modules/.package-lock.json
    [ -f "$hidden" ] || return 0
    [ package-lock.json -nt "$hidden" ] && return 0
    [ package.json -nt "$hidden" ] && return 0
    local want have
    want="$(node -p 'require("./package-lock.json").packages["node_modules/openai"].version')"
    have="$(node -p 'require("./node_modules/openai/package.json").version' 2>/dev/null || true)"
    [ "$want" != "$have" ]
}
if stale; then
    echo "check-sdk: npm ci (openai from package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
fi

echo "check-sdk: openai $(node -p 'require("./node_modules/openai/package.json").version'), node $(node --version), $SHADE_BIN"
# the test file bounds itself: a watchdog stops everything after 55 s
exec node --test --test-reporter=spec compat.test.mjs
