#!/usr/bin/env bash
# bench/limits.sh — what keys and limits cost per request (make bench-limits).
#
# Two gateways in front of the same simulator, measured in the same run:
#   base    no auth: section
#   limits  auth: a key checked on every request, with rpm, tpm,
#           concurrency, a per-model limit and a daily budget (all high
#           enough never to refuse), so every request reserves 7 buckets
#           in the shared state and settles them at finish
# Each round sends BENCH_N requests with h2load (BENCH_C connections) to one
# gateway, then to the other, alternating; the serving process's CPU time
# (user + system, from /proc) is divided by the requests it answered.
# Prints µs of CPU per request for each, the difference, and the ratio —
# the goal (issue 13) is a difference of at most 2 µs.
#
# Environment: SHADE_BIN, BENCH_N (default 20000), BENCH_C (default 8),
# BENCH_ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
SHADE=${SHADE_BIN:-$PWD/bin/shade}
N=${BENCH_N:-20000}
C=${BENCH_C:-8}
ROUNDS=${BENCH_ROUNDS:-3}
command -v h2load >/dev/null || { echo "bench-limits: h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
        curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && [ "${2:-}" = any ] && return 0
        sleep 0.05
    done
    echo "bench-limits: nothing on port $1" >&2; exit 1
}

sim=$(free_port)
"$SHADE" sim --listen 127.0.0.1:$sim --ttft-ms 0 --tps 0 --max-tokens 8 >"$tmp/sim.log" 2>&1 &
pids+=($!)
wait_http $sim any

export SHADE_BENCH_KEY=sk-bench-0123456789abcdef
write_cfg() { # port, 0 none / 1 key + limits / 2 key only
    cat >"$tmp/gw$1.yaml" <<EOF
server:
  listen: 127.0.0.1:$1
  workers: 1
  log_level: warn
models:
  - name: demo
    price: { input: 1, output: 2 }
    backends:
      - url: http://127.0.0.1:$sim
EOF
    if [ "$2" = 2 ]; then
        printf 'auth:\n  keys:\n    - { name: bench, key_env: SHADE_BENCH_KEY }\n' >>"$tmp/gw$1.yaml"
    fi
    if [ "$2" = 1 ]; then
        cat >>"$tmp/gw$1.yaml" <<EOF
auth:
  keys:
    - name: bench
      key_env: SHADE_BENCH_KEY
      limits: { rpm: 100000000, tpm: 2000000000, concurrency: 100000 }
      model_limits:
        - { model: demo, rpm: 100000000 }
      budget: { usd: 1000000000, period: day }
EOF
    fi
}

start_gw() { # port -> the serving process's pid in $child
    "$SHADE" serve -c "$tmp/gw$1.yaml" >"$tmp/gw$1.log" 2>&1 &
    pids+=($!)
    local master=$!
    wait_http "$1"
    child=$(pgrep -P "$master" | head -1)
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

base=$(free_port); lim=$(free_port); key=$(free_port)
write_cfg $base 0; write_cfg $lim 1; write_cfg $key 2
start_gw $base; base_child=$child
start_gw $lim; lim_child=$child
start_gw $key; key_child=$child
printf '{"model":"demo","messages":[{"role":"user","content":"Hello there, how are you?"}],"max_tokens":8}' >"$tmp/body.json"
hz=$(getconf CLK_TCK)

run() { # port child extra-header... -> µs of CPU per request
    local port=$1 child=$2; shift 2
    local t0 t1
    t0=$(cpu_ticks "$child")
    h2load --h1 -n "$N" -c "$C" -d "$tmp/body.json" -H 'content-type: application/json' "$@" \
        "http://127.0.0.1:$port/v1/chat/completions" >"$tmp/h2load.out" 2>&1
    t1=$(cpu_ticks "$child")
    local ok
    ok=$(awk '/status codes:/ {print $3}' "$tmp/h2load.out")
    [ "$ok" = "$N" ] || { echo "bench-limits: $ok of $N answered 2xx on :$port" >&2; cat "$tmp/h2load.out" >&2; exit 1; }
    python3 -c "print(f'{($t1 - $t0) / $hz * 1e6 / $N:.2f}')"
}

# warm up all three
auth=(-H "authorization: Bearer $SHADE_BENCH_KEY")
run $base $base_child >/dev/null
run $key $key_child "${auth[@]}" >/dev/null
run $lim $lim_child "${auth[@]}" >/dev/null
bs=(); ks=(); ls=()
for r in $(seq "$ROUNDS"); do
    bs+=("$(run $base $base_child)")
    ks+=("$(run $key $key_child "${auth[@]}")")
    ls+=("$(run $lim $lim_child "${auth[@]}")")
    echo "round $r: base ${bs[-1]}, key ${ks[-1]}, key+limits ${ls[-1]} µs/request"
done
python3 - "${bs[*]}" "${ks[*]}" "${ls[*]}" "$N" "$C" <<'EOF'
import statistics, sys
b, k, l = ([float(x) for x in a.split()] for a in sys.argv[1:4])
mb, mk, ml = statistics.median(b), statistics.median(k), statistics.median(l)
print(f"\nserving-process CPU per request, median of {len(b)} rounds of {sys.argv[4]} requests, {sys.argv[5]} connections:")
print(f"  base (no auth)                 {mb:7.2f} µs")
print(f"  a key checked                  {mk:7.2f} µs   {mk - mb:+6.2f} µs  ratio {mk / mb:.3f}")
print(f"  key + 7 limit buckets          {ml:7.2f} µs   {ml - mb:+6.2f} µs  ratio {ml / mb:.3f}   (goal: <= +2 µs)")
EOF
