#!/usr/bin/env bash
# make demo: two simulated model servers behind the gateway, a short mixed
# workload, and what the gateway measured.  Everything started is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 scripts/demo.py "$@"
