#!/usr/bin/env bash
# bench/balance.sh — the six balancing strategies against an uneven pool.
#
# Three simulated backends on 127.0.0.1: fast-a and fast-b answer after
# 10 ms, slow-c after 30 ms (3× slower).  For each strategy the gateway
# (server.workers: 1) is started with a config written here, driven by a
# closed-loop wrk (-t1, BAL_CONNECTIONS connections, BAL_DURATION seconds,
# non-streaming chat completions; every request carries an x-session-id
# header drawn from 64 sessions, which prefix_affinity uses as its key),
# and stopped.  Per strategy it prints req/s, p50/p99 latency and each
# backend's share of the requests, read from GET /metrics
# (shade_requests_total{model,backend,code}).
#
# Every process is started here on free loopback ports and stopped by PID on
# exit; a watchdog bounds the whole run (BAL_TIME_LIMIT, default 110 s).
#
# Environment (all optional):
#   SHADE_BIN        gateway binary (default bin/shade)
#   BAL_CONNECTIONS  wrk connections (default 16)
#   BAL_DURATION     seconds per strategy (default 5)
#   BAL_STRATEGIES   which to run (default: all six)
#   BAL_TIME_LIMIT   hard limit for the whole run, seconds (default 110)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SHADE=${SHADE_BIN:-$ROOT/bin/shade}
CONNS=${BAL_CONNECTIONS:-16}
DURATION=${BAL_DURATION:-5}
STRATEGIES=${BAL_STRATEGIES:-"round_robin weighted least_outstanding least_tokens p2c_ewma prefix_affinity"}
LIMIT=${BAL_TIME_LIMIT:-110}

die() { echo "balance.sh: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk is required"
command -v python3 >/dev/null || die "python3 is required"
[ -x "$SHADE" ] || die "$SHADE not found (run make)"

T=$(mktemp -d /tmp/shade-balance-XXXXXX)
PIDS=()
WATCHDOG=

stop_pid() {   # SIGTERM, wait up to 5 s, then SIGKILL — by PID only
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    trap - EXIT INT TERM
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

( sleep "$LIMIT"; echo "balance.sh: time limit ($LIMIT s) reached" >&2; kill -TERM $$ 2>/dev/null ) &
WATCHDOG=$!

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_port() {   # PORT PID
    local i
    for i in $(seq 200); do
        kill -0 "$2" 2>/dev/null || die "process $2 exited early (logs in $T)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "nothing listening on port $1"
}

read -r P_A P_B P_C P_GW <<<"$(free_ports 4)"

# ---------------------------------------------------------------- backends
"$SHADE" sim --listen "127.0.0.1:$P_A" --ttft-ms 10 --tps 0 --max-tokens 16 >"$T/sim-a.log" 2>&1 &
PIDS+=($!); SIM_A=$!
"$SHADE" sim --listen "127.0.0.1:$P_B" --ttft-ms 10 --tps 0 --max-tokens 16 >"$T/sim-b.log" 2>&1 &
PIDS+=($!); SIM_B=$!
"$SHADE" sim --listen "127.0.0.1:$P_C" --ttft-ms 30 --tps 0 --max-tokens 16 >"$T/sim-c.log" 2>&1 &
PIDS+=($!); SIM_C=$!
wait_port "$P_A" "$SIM_A"; wait_port "$P_B" "$SIM_B"; wait_port "$P_C" "$SIM_C"

# ---------------------------------------------------------------- load
cat >"$T/chat.lua" <<'EOF'
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
local body = '{"model":"demo","messages":[{"role":"system","content":"You are a helpful assistant."},' ..
             '{"role":"user","content":"Explain consistent hashing with bounded loads in two sentences."}],' ..
             '"max_tokens":16,"stream":false}'
math.randomseed(42)
request = function()
    return wrk.format(nil, nil, { ["x-session-id"] = "session-" .. math.random(64) }, body)
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("rps=%.1f p50_us=%d p99_us=%d errors=%d status_errors=%d\n",
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

shares() {   # METRICS_FILE -> "a% b% c%"
    python3 - "$1" <<'EOF'
import re, sys
count = {"fast-a": 0, "fast-b": 0, "slow-c": 0}
for line in open(sys.argv[1]):
    m = re.match(r'shade_requests_total\{([^}]*)\}\s+([0-9.eE+]+)', line)
    if not m:
        continue
    labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    if labels.get("model") == "demo" and labels.get("backend") in count:
        count[labels["backend"]] += float(m.group(2))
total = sum(count.values()) or 1
print(" ".join("%5.1f%%" % (100 * count[b] / total) for b in ("fast-a", "fast-b", "slow-c")))
EOF
}

echo "balance.sh: 3 sims (fast-a, fast-b: ttft 10 ms; slow-c: ttft 30 ms), wrk -t1 -c$CONNS -d${DURATION}s, server.workers 1"
printf '%-18s %9s %9s %9s %8s %8s %8s %7s\n' strategy "req/s" "p50 ms" "p99 ms" fast-a fast-b slow-c errors
for strat in $STRATEGIES; do
    cat >"$T/$strat.yaml" <<EOF
server:
  listen: 127.0.0.1:$P_GW
  workers: 1
  log_level: warn
models:
  - name: demo
    balance: $strat
    affinity_header: x-session-id
    backends:
      - {url: "http://127.0.0.1:$P_A", name: fast-a}
      - {url: "http://127.0.0.1:$P_B", name: fast-b}
      - {url: "http://127.0.0.1:$P_C", name: slow-c}
EOF
    "$SHADE" serve -c "$T/$strat.yaml" >"$T/gw-$strat.log" 2>&1 &
    GW=$!
    PIDS+=("$GW")
    wait_port "$P_GW" "$GW"
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$T/chat.lua" "http://127.0.0.1:$P_GW" | grep '^rps=') \
        || die "wrk failed for $strat"
    python3 - "$P_GW" "$T/metrics-$strat.txt" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5) as r:
    open(sys.argv[2], "wb").write(r.read())
EOF
    stop_pid "$GW"
    eval "$(sed 's/ /;/g' <<<"$out")"
    read -r sa sb sc <<<"$(shares "$T/metrics-$strat.txt")"
    printf '%-18s %9.1f %9.1f %9.1f %8s %8s %8s %7d\n' "$strat" "$rps" "$(awk "BEGIN{print $p50_us/1000}")" \
        "$(awk "BEGIN{print $p99_us/1000}")" "$sa" "$sb" "$sc" $((errors + status_errors))
done
