#!/usr/bin/env bash
# bench/shadow.sh — what shadowing costs the user, on 127.0.0.1.
#
# The promise of shadowing: the user's request never pays for the shadow,
# and a hung shadow changes nothing for the user.  This script measures the
# primary's latency and throughput through shade, in one run, in front of
# the same primary simulator with the same request, in these configurations:
#   off      no `shadows:` section: the baseline;
#   healthy  sample 100, aa_percent 0, to a candidate simulator that answers
#            at once;
#   hung     sample 100, aa_percent 0, to a candidate that never answers
#            (sim --hang-rate 1), deadline 2s, max_concurrent 64: at most 64
#            legs wait for their deadline at a time, and every other
#            request's leg is dropped at the cap;
#   aa       as healthy, plus aa_percent 100: every request also goes to the
#            primary simulator a second time.
# Three measurements (doc/benchmarks.md explains how to read them):
#   1. load:   closed-loop wrk, BENCH_CONNECTIONS connections, as fast as the
#              two shared cores allow: req/s, p50, p99, and the CPU time of
#              shade and of the simulators per request;
#   2. paced:  about BENCH_RATE req/s over BENCH_PACED_CONNECTIONS
#              connections, each waiting a random time between requests:
#              p50 and p99 at a moderate load, with CPU to spare;
#   3. single: one connection, one request at a time, with the request's path
#              (wrk, shade's worker thread, the primary simulator) on CPU 1
#              and the shadow's own work (the candidate simulator, shade's
#              pair-store writer thread) on CPU 0: the latency that mirroring
#              adds inside the request's path, without CPU contention.
# Each is printed with its ratio to the baseline measured in the same run,
# followed by the shadow accounting of every configuration (requests,
# mirrored, stored, dropped by reason, shadow legs by outcome) from
# GET /admin/shadows and GET /metrics, checked against the pair store.
# Every process is started here, on free loopback ports, and stopped by PID
# on exit.  Nothing is written outside a temporary directory unless asked
# (the pair stores of healthy and aa reach several hundred MB each there).
#
# Environment (all optional):
#   SHADE_BIN               gateway binary (default bin/shade)
#   BENCH_CONFIGS           configurations (default "off healthy hung aa";
#                           off, the baseline, always runs)
#   BENCH_CONNECTIONS       wrk connections under load (default 20)
#   BENCH_DURATION          seconds per measured load run (default 8)
#   BENCH_WARMUP            seconds of warm-up before each load run (default 2)
#   BENCH_ROUNDS            load rounds, the order reversed every other round;
#                           the median is reported (default 2)
#   BENCH_RATE              total request rate of the paced runs (default 2000)
#   BENCH_PACED_CONNECTIONS connections of the paced runs (default 20)
#   BENCH_PACED_DURATION    seconds per paced run, after 1 s of warm-up (default 4)
#   BENCH_SINGLE_DURATION   seconds per one-connection run, after 1 s of
#                           warm-up (default 2)
#   BENCH_PHASES            which measurements to run (default "load paced single")
#   BENCH_HUNG_CAP          max_concurrent of the hung shadow (default 64)
#   BENCH_ANALYSIS_INTERVAL analysis.interval of every shadow (default 1h: no
#                           periodic analysis during the run; see write_config)
#   BENCH_PIN               CPU placement: auto (default), none or one
#                           (see "CPU placement" below)
#   BENCH_WORKERS           workers for shade and the simulators (default 1)
#   BENCH_TIME_LIMIT        hard limit for the whole run, seconds (default 150)
#   BENCH_OUT=FILE          also write the report to FILE
#   BENCH_KEEP=1            keep the temporary directory (configurations, logs,
#                           pair stores, raw figures)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SHADE=${SHADE_BIN:-$ROOT/bin/shade}
CONFIGS=${BENCH_CONFIGS:-off healthy hung aa}
CONNS=${BENCH_CONNECTIONS:-20}
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
RATE=${BENCH_RATE:-2000}
PCONNS=${BENCH_PACED_CONNECTIONS:-20}
PDURATION=${BENCH_PACED_DURATION:-4}
SDURATION=${BENCH_SINGLE_DURATION:-2}
PHASES=${BENCH_PHASES:-load paced single}
WORKERS=${BENCH_WORKERS:-1}
LIMIT=${BENCH_TIME_LIMIT:-150}
NCPU=$(nproc 2>/dev/null || echo 1)
PIN=${BENCH_PIN:-auto}
[ "$NCPU" -ge 2 ] || PIN=none
# every simulator answers at once; the hung candidate never does (and, when
# stopped, does not wait for the replies it will never send)
SIM_ARGS=(--ttft-ms 0 --tps 0 --max-tokens 16)
HUNG_ARGS=(--hang-rate 1 --grace-ms 0)
HUNG_DEADLINE_S=2
HUNG_CAP=${BENCH_HUNG_CAP:-64}
ANALYSIS_INTERVAL=${BENCH_ANALYSIS_INTERVAL:-1h}

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- arguments
CFG_LIST=(off)
for c in $CONFIGS; do
    case $c in
    off) ;;
    healthy|hung|aa) [[ " ${CFG_LIST[*]} " == *" $c "* ]] || CFG_LIST+=("$c") ;;
    *) die "BENCH_CONFIGS: unknown configuration '$c' (off, healthy, hung, aa)" ;;
    esac
done
for v in CONNS DURATION WARMUP ROUNDS RATE PCONNS PDURATION SDURATION WORKERS LIMIT HUNG_CAP; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
for p in $PHASES; do
    case $p in load|paced|single) ;; *) die "BENCH_PHASES: unknown phase '$p' (load, paced, single)" ;; esac
done

# ---------------------------------------------------------------- tools
# Install what is missing with apt-get (sudo only when not root and present).
install_pkgs() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "missing packages ($*) and not root; install them: apt-get install $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get"
    log "installing: $*"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
command -v python3 >/dev/null || need+=(python3)
command -v timeout >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    install_pkgs "${need[@]}"
fi
[ -x "$SHADE" ] || die "$SHADE not found; run 'make' first"
"$SHADE" sim --help >/dev/null 2>&1 || die "'$SHADE sim' does not work in this build"

# ---------------------------------------------------------------- processes
T=$(mktemp -d "${TMPDIR:-/tmp}/shade-bench-shadow.XXXXXX")
PIDS=()          # every server process started here, in start order
WATCHDOG=''
FG_PID=''        # the measurement in progress (see fg_run)
RAW=$T/raw.txt
: >"$RAW"
: >"$T/pids"     # the same, for the watchdog

is_running() {   # PID exists and is not a zombie (no fork)
    local st
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st:0:1}" != Z ]
}
stop_pid() {     # stop one process started by start_bg, and its children
    local pid=$1 kids i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_running "$pid" || break
        sleep 0.1
    done
    if is_running "$pid"; then
        kids=$(pgrep -P "$pid" || true)
        log "pid $pid did not stop on SIGTERM within 5 s; killing it"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
stop_all() {     # the gateways first (started last), then the simulators
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    PIDS=()
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$FG_PID" ]; then   # timeout passes the signal on to its command
        kill -TERM "$FG_PID" 2>/dev/null || true
        wait "$FG_PID" 2>/dev/null || true
    fi
    stop_all
    if [ -n "$WATCHDOG" ]; then
        kill "$WATCHDOG" 2>/dev/null || true
        { wait "$WATCHDOG"; } 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Hard time limit.  The watchdog signals this script, whose trap stops
# everything (every foreground command is itself bounded with `timeout`).
# Should that cleanup not be done 15 s later, the watchdog kills the servers
# listed in $T/pids, then the script.  It waits with `read -t` on a FIFO
# nobody writes to, so it has no child process of its own and stops at once
# when cleanup sends it SIGTERM.
mkfifo "$T/watchdog"
(
    read -r -t "$LIMIT" _ <>"$T/watchdog" || true
    echo "bench: time limit of ${LIMIT}s reached, stopping" >&2
    kill -TERM $$ 2>/dev/null || exit 0
    read -r -t 15 _ <>"$T/watchdog" || true
    kill -0 $$ 2>/dev/null || exit 0
    echo "bench: cleanup did not finish, killing" >&2
    while read -r p; do
        # shellcheck disable=SC2046
        kill -KILL "$p" $(pgrep -P "$p") 2>/dev/null
    done <"$T/pids"
    kill -KILL $$
) &
WATCHDOG=$!

# start_bg NAME CMD... : run CMD in the background, output to $T/NAME.log;
# sets LAST_PID
start_bg() {
    local name=$1; shift
    "$@" >"$T/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    echo "$LAST_PID" >>"$T/pids"
}
# with_children PID... : these PIDs and their direct children (a gateway's
# worker process)
with_children() {
    # shellcheck disable=SC2046  # one PID per word
    echo "$@" $(pgrep -P "$(IFS=,; echo "$*")" || true)
}
# cpu_ns PID... : CPU time (ns) used so far by these processes, all their
# threads and their direct children
cpu_ns() {
    local sum=0 p f v
    for p in $(with_children "$@"); do
        for f in /proc/"$p"/task/*/schedstat; do
            { read -r v _ <"$f"; } 2>/dev/null && sum=$((sum + v))
        done
    done
    echo "$sum"
}
# wait_port NAME PID PORT : until PORT accepts connections (5 s at most)
wait_port() {
    local name=$1 pid=$2 port=$3
    for _ in $(seq 100); do
        is_running "$pid" || { cat "$T/$name.log" >&2; die "$name exited at startup"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    cat "$T/$name.log" >&2
    die "$name did not listen on port $port"
}
free_ports() {   # N distinct free loopback ports
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# fg_run SECONDS OUTFILE CMD... : run CMD, bounded by `timeout`, as a job the
# script waits for, so that a signal to the script is handled at once (the
# trap stops the job too); output to OUTFILE
fg_run() {
    local secs=$1 outfile=$2 rc=0
    shift 2
    timeout "$secs" "$@" >"$outfile" 2>&1 &
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=''
    return "$rc"
}

# ---------------------------------------------------------------- CPU placement
# doc/benchmarks.md ("The machine, and why the processes are placed as they
# are") has the measurements behind bench/run.sh's placement; this script
# follows it.
#   auto   load and paced runs: nothing pinned, the scheduler spreads wrk,
#          shade, its pair-store writer and the simulators over the CPUs;
#          one-connection runs: the request's path on CPU 1 (wrk, the
#          primary simulator, every gateway thread but the background ones),
#          the shadow's own work on CPU 0 (the candidate simulators and the
#          gateways' background threads: the pair-store writer) (default);
#   none   nothing pinned, ever;
#   one    every process on CPU 1, in every phase.
case $PIN in
auto) PIN_DESC="auto: load and paced runs unpinned; one-connection runs: request path on CPU 1, candidates and pair-store writer on CPU 0" ;;
none) PIN_DESC="none: the scheduler places every process" ;;
one)  PIN_DESC="one: every process on CPU 1" ;;
*)    die "BENCH_PIN must be auto, none or one" ;;
esac
# place MODE : move the running servers (every thread) as MODE says — none:
# anywhere; one: all on CPU 1; split: see "auto" above — and set PREFIX, the
# command prefix for wrk
place() {
    local p t tid wchan all=0-$((NCPU - 1))
    PREFIX=()
    MOVED=0
    case $1 in
    none) for p in $(with_children "${PIDS[@]}"); do taskset -a -c -p "$all" "$p" >/dev/null; done ;;
    one|split)
        PREFIX=(taskset -c 1)
        for p in $(with_children "${PIDS[@]}"); do taskset -a -c -p 1 "$p" >/dev/null; done
        [ "$1" = split ] || return 0
        for p in "${CAND_PIDS[@]}"; do taskset -a -c -p 0 "$p" >/dev/null; done
        # a gateway's worker process: its main thread waits for signals, its
        # worker threads in epoll_wait, its background threads (pair-store
        # writer, health checker) on a condition variable: a futex.  The
        # servers are idle here, so every thread is asleep where it waits.
        for p in $(pgrep -P "$(IFS=,; echo "${GW_PIDS[*]}")" || true); do
            for t in /proc/"$p"/task/*; do
                tid=${t##*/}
                wchan=$(cat "$t/wchan" 2>/dev/null || true)
                if [ "$tid" != "$p" ] && [[ $wchan == *futex* ]]; then
                    taskset -c -p 0 "$tid" >/dev/null && MOVED=$((MOVED + 1))
                fi
            done
        done ;;
    esac
}

# ---------------------------------------------------------------- inputs
# The request of bench/run.sh: system prompt, three turns, 1.3 KB.
cat >"$T/chat.json" <<'EOF'
{"model":"demo","messages":[{"role":"system","content":"You are a careful senior software engineer helping a colleague review C code for a network service. Answer precisely, cite the relevant lines, and prefer short concrete suggestions over general advice. If something is ambiguous, say what you would need to know."},{"role":"user","content":"Here is the read path of our connection handler:\n\nstatic void on_read(struct conn *c) {\n    for (;;) {\n        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);\n        if (n > 0) { c->in.len += n; continue; }\n        if (n == 0) { conn_close(c); return; }\n        if (errno == EAGAIN) break;\n        conn_close(c); return;\n    }\n    parse(c);\n}\n\nDo you see any problem with it?"},{"role":"assistant","content":"Two things stand out. First, when the buffer is full (len == cap) read() is called with a length of zero and returns 0, which the loop treats as end of file and closes a healthy connection. Second, EINTR is treated as a fatal error. Grow the buffer, or stop reading and parse, before it is full, and retry on EINTR."},{"role":"user","content":"Good catch on the full buffer. If I grow it, how do I stop a client from making us allocate without limit? Should the cap be per connection or global?"}],"max_tokens":16,"temperature":0.7,"stream":false}
EOF
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$T/chat.json"
truncate -s -1 "$T/chat.json"   # drop the heredoc's final newline
BODY_BYTES=$(stat -c %s "$T/chat.json")

# chat.lua: closed loop; chat-paced.lua: after each response, a connection
# waits a random time, exponentially distributed with a mean of MEAN_MS ms,
# before its next request, so that the connections do not stay in step and
# requests arrive one by one, not in bursts (wrk's clock starts when a
# request is written: the wait is not counted as latency)
write_lua() {   # FILE MEAN_MS (0: no wait)
    {
        cat <<EOF
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$T/chat.json", "rb"))
wrk.body = f:read("*a")
f:close()
EOF
        [ "$2" = 0 ] || cat <<EOF
math.randomseed(1)
delay = function() return math.floor(-$2 * math.log(1 - math.random()) + 0.5) end
EOF
        cat <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "rps=%.1f requests=%d p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d errors=%d status_errors=%d\n",
        summary.requests / (summary.duration / 1e6), summary.requests,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.mean, latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
    } >"$1"
}
write_lua "$T/chat.lua" 0
PACE_MS=$(((PCONNS * 1000 + RATE / 2) / RATE))
[ "$PACE_MS" -ge 1 ] || die "BENCH_RATE is too high for $PCONNS paced connections (at most $((PCONNS * 1000)) req/s)"
write_lua "$T/chat-paced.lua" "$PACE_MS"

# settle.py URL LIMIT: until no shadow leg is in flight and the pair-store
# queue is empty
cat >"$T/settle.py" <<'EOF'
import json, sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + limit
while True:
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.load(r)
    busy = d["recorder_queue"] + sum(s["in_flight"] for s in d["shadows"])
    if busy == 0:
        sys.exit(0)
    if time.monotonic() > end:
        sys.exit("in flight / queued: %d" % busy)
    time.sleep(0.05)
EOF
# acct.py BASE_URL DB: one line of JSON, the shadow's accounting
cat >"$T/acct.py" <<'EOF'
import json, os, re, sqlite3, sys, urllib.request
base, db = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(base + "/admin/shadows", timeout=5) as r:
    s = json.load(r)["shadows"][0]
# the users' requests: shade_requests_total of model demo; where the series
# has a variant label, only variant="primary" (not the shadow and A/A legs)
requests = 0.0
with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
    for line in r.read().decode().splitlines():
        m = re.match(r'shade_requests_total\{(.*)\} (\S+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1)))
            if labels.get("model") == "demo" and labels.get("variant", "primary") == "primary":
                requests += float(m.group(2))
con = sqlite3.connect(db, timeout=5)
rows = con.execute("SELECT count(*) FROM pairs WHERE shadow = ?", (s["name"],)).fetchone()[0]
con.close()
size = sum(os.path.getsize(db + x) for x in ("", "-wal") if os.path.exists(db + x))
c = s["counters"]
print(json.dumps({"state": s["state"], "in_flight": s["in_flight"], "requests": requests,
                  "mirrored": c["mirrored"], "stored": c["stored"], "dropped": c["dropped"],
                  "dropped_by_reason": c["dropped_by_reason"],
                  "skipped": sum(c["skipped_by_reason"].values()),
                  "legs": c["legs"], "db_pairs": rows, "db_bytes": size}, separators=(",", ":")))
EOF

# ---------------------------------------------------------------- the machine
# Other work on the machine skews everything: measure it for one second first.
cpu_busy() {
    python3 - <<'EOF'
import time
def snap():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return v[3] + v[4], sum(v)   # idle + iowait, total
i0, t0 = snap(); time.sleep(1); i1, t1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0))))
EOF
}
BUSY=$(cpu_busy)
if [ "$BUSY" -gt 10 ]; then
    log "warning: the machine is already ${BUSY}% busy before the benchmark; results will be skewed"
fi
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ {printf "%.0fGiB", $2 / 1048576}' /proc/meminfo)
{
    echo "META date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "META machine=${NCPU}_CPUs_(${CPU// /_}),_${MEM}_RAM,_Linux_$(uname -r)"
    echo "META pinning=${PIN_DESC// /_}"
    echo "META background_busy=$BUSY"
    echo "META versions=shade_$("$SHADE" --version | awk '{print $2}')_(git_$GIT_REV),_wrk_$(wrk -v 2>&1 | awk 'NR==1 {print $2}'),_workers=$WORKERS"
    echo "META connections=$CONNS duration=$DURATION warmup=$WARMUP rounds=$ROUNDS body_bytes=$BODY_BYTES"
    echo "META rate=$RATE paced_connections=$PCONNS pace_ms=$PACE_MS paced_duration=$PDURATION"
    echo "META single_duration=$SDURATION"
    echo "META hung_deadline_s=$HUNG_DEADLINE_S hung_cap=$HUNG_CAP analysis_interval=$ANALYSIS_INTERVAL configs=$(IFS=,; echo "${CFG_LIST[*]}")"
} >>"$RAW"

# ---------------------------------------------------------------- servers
N=${#CFG_LIST[@]}
# shellcheck disable=SC2207
PORTS=($(free_ports $((3 + N))))
P_PRIMARY=${PORTS[0]} P_HEALTHY=${PORTS[1]} P_HUNG=${PORTS[2]}
start_bg sim-primary "$SHADE" sim --listen "127.0.0.1:$P_PRIMARY" --workers "$WORKERS" --seed 1 "${SIM_ARGS[@]}"
PID_PRIMARY=$LAST_PID
start_bg sim-healthy "$SHADE" sim --listen "127.0.0.1:$P_HEALTHY" --workers "$WORKERS" --seed 2 "${SIM_ARGS[@]}"
PID_HEALTHY=$LAST_PID
start_bg sim-hung "$SHADE" sim --listen "127.0.0.1:$P_HUNG" --workers "$WORKERS" "${HUNG_ARGS[@]}"
PID_HUNG=$LAST_PID
SIM_PIDS=("$PID_PRIMARY" "$PID_HEALTHY" "$PID_HUNG")
CAND_PIDS=("$PID_HEALTHY" "$PID_HUNG")

# write_config CFG PORT : shade's configuration for CFG.  Auto-stop is off
# (stop_below: 0): with the default rule the hung shadow would be stopped at
# its first analysis, and the rest of the run would measure shadowing off.
# The periodic analysis runs every BENCH_ANALYSIS_INTERVAL (default 1h, so
# only once, at start-up, on an empty store): every gateway runs for the
# whole run, and an idle gateway's analysis of its pair store (about 0.4 s
# of CPU over 20,000 pairs, every 10 s by default, traffic or not) would
# land in the other configurations' measurements.
write_config() {
    local cfg=$1 port=$2 cand aa=0 deadline=10s cap=64
    cat >"$T/shade-$cfg.yaml" <<EOF
# generated by bench/shadow.sh: configuration "$cfg"
server:
  listen: 127.0.0.1:$port
  workers: $WORKERS
  shutdown_timeout: 2s
models:
  - name: demo
    backends:
      - url: http://127.0.0.1:$P_PRIMARY
        name: sim
EOF
    [ "$cfg" != off ] || return 0
    case $cfg in
    healthy) cand=$P_HEALTHY ;;
    hung)    cand=$P_HUNG deadline=${HUNG_DEADLINE_S}s cap=$HUNG_CAP ;;
    aa)      cand=$P_HEALTHY aa=100 ;;
    esac
    cat >>"$T/shade-$cfg.yaml" <<EOF
shadows:
  - name: candidate
    model: demo
    backends:
      - url: http://127.0.0.1:$cand
        name: sim-$cfg
    sample: 100
    aa_percent: $aa
    deadline: $deadline
    max_concurrent: $cap
    analysis: { stop_below: 0, interval: $ANALYSIS_INTERVAL }
shadow_store:
  path: $T/pairs-$cfg.db
EOF
}

declare -A PORT_OF PID_OF
GW_PIDS=()
i=3
for cfg in "${CFG_LIST[@]}"; do
    PORT_OF[$cfg]=${PORTS[i]}
    i=$((i + 1))
    write_config "$cfg" "${PORT_OF[$cfg]}"
    "$SHADE" check -c "$T/shade-$cfg.yaml" >"$T/check-$cfg.log" 2>&1 \
        || die "configuration $cfg rejected: $(cat "$T/check-$cfg.log")"
    start_bg "shade-$cfg" "$SHADE" serve -c "$T/shade-$cfg.yaml"
    PID_OF[$cfg]=$LAST_PID
    GW_PIDS+=("$LAST_PID")
done
wait_port sim-primary "$PID_PRIMARY" "$P_PRIMARY"
wait_port sim-healthy "$PID_HEALTHY" "$P_HEALTHY"
wait_port sim-hung "$PID_HUNG" "$P_HUNG"
for cfg in "${CFG_LIST[@]}"; do wait_port "shade-$cfg" "${PID_OF[$cfg]}" "${PORT_OF[$cfg]}"; done

# check_path CFG : one request must succeed through CFG's gateway, at once
check_path() {
    timeout 10 python3 - "http://127.0.0.1:${PORT_OF[$1]}/v1/chat/completions" "$T/chat.json" "$1" <<'EOF' \
        || die "sanity request through $1 failed"
import sys, urllib.request
url, body, name = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    data = r.read()
    if r.status != 200 or b"choices" not in data:
        sys.exit("%s: HTTP %d %r" % (name, r.status, data[:200]))
EOF
}

# settle CFG : wait until CFG's gateway has no shadow leg in flight and its
# pair-store queue is empty (the hung shadow's last legs end at their
# deadline, up to 2 s after its run).  Between runs this is not needed: the
# hung configuration leaves at most max_concurrent legs, which end quietly
# during the next run; the accounting and the thread placement wait for it.
settle() {
    [ "$1" != off ] || return 0
    fg_run $((HUNG_DEADLINE_S + 15)) "$T/settle.out" python3 "$T/settle.py" \
        "http://127.0.0.1:${PORT_OF[$1]}/admin/shadows" $((HUNG_DEADLINE_S + 10)) \
        || log "  $1: shadow legs still in flight after $((HUNG_DEADLINE_S + 10)) s: $(cat "$T/settle.out")"
}

# sys_busy_ns : CPU time used on the whole machine so far (all CPUs)
TICK_NS=$((1000000000 / $(getconf CLK_TCK)))
sys_busy_ns() {
    local user nice sys irq softirq
    read -r _ user nice sys _ _ irq softirq _ </proc/stat   # cpu user nice system idle iowait irq softirq
    echo $(((user + nice + sys + irq + softirq) * TICK_NS))
}
# children_ns FILE : the children's user + system time from the output of `times`
children_ns() {
    local line
    line=$(sed -n 2p "$1")
    if [[ $line =~ ^([0-9]+)m([0-9]+)\.([0-9]+)s\ ([0-9]+)m([0-9]+)\.([0-9]+)s$ ]]; then
        local r=("${BASH_REMATCH[@]}")
        echo $(((r[1] * 60 + 10#${r[2]}) * 1000000000 + 10#${r[3]} * 1000000 \
            + (r[4] * 60 + 10#${r[5]}) * 1000000000 + 10#${r[6]} * 1000000))
    else
        echo 0
    fi
}

# run_wrk CFG LUA CONNS SECONDS : sets RES to wrk's summary line (see
# write_lua), the CPU time that shade (all its threads and processes:
# worker, pair-store writer) and the three simulators used per request, and
# how much CPU everything else on the machine used meanwhile (other_cpu_pct,
# in % of one core; wrk's own time is excluded; a few % is kernel noise)
run_wrk() {
    local cfg=$1 lua=$2 conns=$3 secs=$4 out n px0 px1 sim0 sim1 sys0 sys1 wrk_ns other
    px0=$(cpu_ns "${PID_OF[$cfg]}")
    sim0=$(cpu_ns "${SIM_PIDS[@]}")
    sys0=$(sys_busy_ns)
    times >"$T/times0"   # builtin, no fork: CPU time of the children reaped so far
    fg_run $((secs + 20)) "$T/wrk.out" "${PREFIX[@]}" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$lua" \
        "http://127.0.0.1:${PORT_OF[$cfg]}" || die "wrk failed against $cfg: $(cat "$T/wrk.out")"
    times >"$T/times1"   # ... now including wrk
    sys1=$(sys_busy_ns)
    px1=$(cpu_ns "${PID_OF[$cfg]}")
    sim1=$(cpu_ns "${SIM_PIDS[@]}")
    wrk_ns=$(($(children_ns "$T/times1") - $(children_ns "$T/times0")))
    out=$(grep '^rps=' "$T/wrk.out") || die "no wrk summary for $cfg: $(cat "$T/wrk.out")"
    n=0
    if [[ $out =~ requests=([0-9]+) ]]; then n=${BASH_REMATCH[1]}; fi
    [ "$n" -gt 0 ] || die "no request completed against $cfg"
    other=$(((sys1 - sys0 - (px1 - px0) - (sim1 - sim0) - wrk_ns) / secs / 10000000))
    RES="$out shade_cpu_us=$(((px1 - px0) / n / 10))e-2 sims_cpu_us=$(((sim1 - sim0) / n / 10))e-2"
    RES+=" shade_cpu_pct=$(((px1 - px0) / secs / 10000000)) wrk_cpu_pct=$((wrk_ns / secs / 10000000))"
    RES+=" other_cpu_pct=$((other < 0 ? 0 : other))"
}

# ---------------------------------------------------------------- run
has_phase() { [[ " $PHASES " == *" $1 "* ]]; }
# pin mode of each phase
case $PIN in
auto) MODE_LOAD=none MODE_PACED=none MODE_SINGLE=split ;;
none) MODE_LOAD=none MODE_PACED=none MODE_SINGLE=none ;;
one)  MODE_LOAD=one MODE_PACED=one MODE_SINGLE=one ;;
esac

for cfg in "${CFG_LIST[@]}"; do check_path "$cfg"; done
for cfg in "${CFG_LIST[@]}"; do settle "$cfg"; done

if has_phase load; then
    log "phase 1: load (wrk -c $CONNS, ${DURATION} s after ${WARMUP} s warm-up, $ROUNDS round(s))"
    place "$MODE_LOAD"
    for r in $(seq "$ROUNDS"); do
        # reverse the order every other round so that drift favours no configuration
        order=("${CFG_LIST[@]}")
        if [ $((r % 2)) = 0 ]; then
            order=()
            for ((i = N - 1; i >= 0; i--)); do order+=("${CFG_LIST[i]}"); done
        fi
        for cfg in "${order[@]}"; do
            run_wrk "$cfg" "$T/chat.lua" "$CONNS" "$WARMUP"
            run_wrk "$cfg" "$T/chat.lua" "$CONNS" "$DURATION"
            log "  round $r $cfg: $RES"
            echo "LOAD round=$r config=$cfg $RES" >>"$RAW"
        done
    done
fi

if has_phase paced; then
    log "phase 2: paced (about $RATE req/s: $PCONNS connections, on average ${PACE_MS} ms between requests; ${PDURATION} s after 1 s warm-up)"
    place "$MODE_PACED"
    for cfg in "${CFG_LIST[@]}"; do
        run_wrk "$cfg" "$T/chat-paced.lua" "$PCONNS" 1
        run_wrk "$cfg" "$T/chat-paced.lua" "$PCONNS" "$PDURATION"
        log "  $cfg: $RES"
        echo "PACED config=$cfg $RES" >>"$RAW"
    done
fi

if has_phase single; then
    # idle servers, so that place finds every thread asleep where it waits
    for cfg in "${CFG_LIST[@]}"; do settle "$cfg"; done
    place "$MODE_SINGLE"
    log "phase 3: one connection (${SDURATION} s after 1 s warm-up; placement $MODE_SINGLE, $MOVED background thread(s) moved to CPU 0)"
    echo "META single_mode=$MODE_SINGLE single_moved=$MOVED" >>"$RAW"
    if [ "$MODE_SINGLE" = split ] && [ "$MOVED" = 0 ] && [ "$N" -gt 1 ]; then
        log "warning: no pair-store writer thread found (no /proc/*/wchan?); it shares CPU 1 with the request's path"
    fi
    for cfg in "${CFG_LIST[@]}"; do
        run_wrk "$cfg" "$T/chat.lua" 1 1
        run_wrk "$cfg" "$T/chat.lua" 1 "$SDURATION"
        log "  $cfg: $RES"
        echo "SINGLE config=$cfg $RES" >>"$RAW"
    done
    place none
fi

# the accounting, once every leg has ended: the gateway's counters and the
# pair store's row count (the writer has flushed: its queue is empty)
for cfg in "${CFG_LIST[@]}"; do
    [ "$cfg" != off ] || continue
    settle "$cfg"
    fg_run 15 "$T/acct.out" python3 "$T/acct.py" "http://127.0.0.1:${PORT_OF[$cfg]}" "$T/pairs-$cfg.db" \
        || die "cannot read the shadow accounting of $cfg: $(cat "$T/acct.out")"
    echo "ACCT config=$cfg $(cat "$T/acct.out")" >>"$RAW"
done

BUSY_AFTER=$(cpu_busy)
echo "META background_busy_after=$BUSY_AFTER" >>"$RAW"
stop_all

# ---------------------------------------------------------------- report
REPORT=$(python3 - "$RAW" <<'EOF'
import json, statistics, sys

meta, runs, acct = {}, {"LOAD": {}, "PACED": {}, "SINGLE": {}}, {}
for line in open(sys.argv[1]):
    parts = line.split(None, 2)
    if not parts:
        continue
    tag = parts[0]
    if tag == "META":
        meta.update(p.partition("=")[::2] for p in line.split()[1:])
    elif tag in runs:
        d = {}
        for f in line.split()[1:]:
            k, _, v = f.partition("=")
            try:
                d[k] = float(v)
            except ValueError:
                d[k] = v
        runs[tag].setdefault(d["config"], []).append(d)
    elif tag == "ACCT":
        acct[parts[1].partition("=")[2]] = json.loads(parts[2])

configs = meta["configs"].split(",")
LABEL = {
    "off": "off (baseline)",
    "healthy": "healthy shadow",
    "hung": "hung shadow",
    "aa": "healthy + A/A 100%",
}
out = []
w = out.append
w("shade shadowing benchmark — %s" % meta.get("date", "?"))
w("machine: %s" % meta.get("machine", "?").replace("_", " "))
w("versions: %s" % meta.get("versions", "?").replace("_", " "))
w("pinning: %s" % meta.get("pinning", "?").replace("_", " "))
busy, after = meta.get("background_busy", "?"), meta.get("background_busy_after", "?")
skewed = any(b.isdigit() and int(b) > 10 for b in (busy, after))
w("CPU busy from other processes, 1 s before / after the run: %s%% / %s%%%s"
  % (busy, after, "  <-- WARNING: other load on the machine, results skewed" if skewed else ""))
w("configurations: the same primary simulator and request (%s B, non-streaming, 16 tokens) through shade:"
  % meta.get("body_bytes", "?"))
w("  off      no shadows: section (the baseline)")
w("  healthy  sample 100, aa_percent 0, candidate simulator answering at once")
w("  hung     sample 100, aa_percent 0, candidate that never answers; deadline %ss, max_concurrent %s"
  % (meta.get("hung_deadline_s"), meta.get("hung_cap")))
w("  aa       as healthy, plus aa_percent 100 (a second call to the primary simulator per request)")
w("  every shadow: auto-stop off (stop_below 0), analysis.interval %s" % meta.get("analysis_interval"))
w("")

KEYS = ("rps", "p50_us", "p99_us", "errors", "status_errors", "shade_cpu_us", "sims_cpu_us")


def table(title, rs, notes):
    if "off" not in rs:
        return
    med = {c: {k: statistics.median(r[k] for r in v) for k in KEYS} for c, v in rs.items()}
    base = med["off"]
    w(title)
    w("")
    w("   %-19s %8s %10s %10s %6s %6s %6s %8s %6s %9s %9s"
      % ("config", "req/s", "p50", "p99", "req/s", "p50", "p99", "p50", "errors", "shade", "sims"))
    w("   %-19s %8s %10s %10s %6s %6s %6s %8s %6s %9s %9s"
      % ("", "", "", "", "ratio", "ratio", "ratio", "added", "", "CPU/req", "CPU/req"))
    for c in configs:
        if c not in med:
            continue
        m = med[c]
        w("   %-19s %8.0f %7.3f ms %7.3f ms %5.2fx %5.2fx %5.2fx %+5.0f µs %6d %6.1f µs %6.1f µs"
          % (LABEL[c], m["rps"], m["p50_us"] / 1e3, m["p99_us"] / 1e3, m["rps"] / base["rps"],
             m["p50_us"] / base["p50_us"], m["p99_us"] / base["p99_us"], m["p50_us"] - base["p50_us"],
             m["errors"] + m["status_errors"], m["shade_cpu_us"], m["sims_cpu_us"]))
    for n in notes:
        w("   " + n)
    other = max(r.get("other_cpu_pct", 0) for v in rs.values() for r in v)
    w("   other processes used at most %d%% of a core during a run%s"
      % (other, "  <-- WARNING: other load on the machine, results skewed" if other > 10 else ""))
    w("")


table("1. Under load: wrk 1 thread x %s connections, closed loop, %s s per run after %s s warm-up, median of %s round(s)"
      % (meta["connections"], meta["duration"], meta["warmup"], meta["rounds"]), runs["LOAD"],
      ["(ratios and added p50: against off, same run; CPU/req: CPU time per completed request of shade,",
       " all its threads and processes, and of the three simulators together)"])
table("2. Paced: about %s req/s over %s connections, each waiting on average %s ms (exponentially distributed)\n"
      "   between a response and its next request; %s s after 1 s warm-up"
      % (meta["rate"], meta["paced_connections"], meta["pace_ms"], meta["paced_duration"]), runs["PACED"],
      ["(latency from writing a request to the end of its response; the waits are not counted)"])
single_note = {
    "split": ["(wrk, the primary simulator and shade's worker thread on CPU 1; the candidate simulators and",
              " shade's pair-store writer (%s thread(s) found) on CPU 0: the added p50 is what mirroring"
              % meta.get("single_moved", "?"),
              " costs inside the request's own path)"],
    "one": ["(every process on CPU 1: the shadow's own work competes with the request's path)"],
    "none": ["(nothing pinned)"],
}.get(meta.get("single_mode", ""), [])
table("3. One connection: one request at a time, %s s after 1 s warm-up" % meta["single_duration"],
      runs["SINGLE"], single_note)

if acct:
    w("4. Shadow accounting over the whole run (sanity request, warm-ups, measured runs), once every leg ended:")
    w("")
    w("   %-19s %9s %9s %9s %9s %-18s %s" % ("config", "requests", "mirrored", "stored", "dropped",
                                            "dropped by reason", "shadow legs by outcome"))
    for c in configs:
        a = acct.get(c)
        if not a:
            continue
        reasons = ", ".join("%s %d" % (k, v) for k, v in a["dropped_by_reason"].items() if v) or "-"
        legs = ", ".join("%s %d" % (k, v) for k, v in a["legs"]["shadow"].items() if v) or "-"
        aa = ", ".join("%s %d" % (k, v) for k, v in a["legs"]["aa"].items() if v)
        if aa:
            legs += "; A/A legs: " + aa
        w("   %-19s %9.0f %9d %9d %9d %-18s %s"
          % (LABEL[c], a["requests"], a["mirrored"], a["stored"], a["dropped"], reasons, legs))
    w("")
    for c in configs:
        a = acct.get(c)
        if not a:
            continue
        checks = ["requests = mirrored: %s" % ("yes" if a["requests"] == a["mirrored"] else "NO")]
        bal = a["mirrored"] - a["stored"] - a["dropped"]
        checks.append("mirrored = stored + dropped: %s" % ("yes" if bal == 0 else "NO (%+d)" % bal))
        checks.append("store rows = stored: %s" % ("yes" if a["db_pairs"] == a["stored"]
                                                   else "NO (%d rows)" % a["db_pairs"]))
        checks.append("state %s" % a["state"])
        if a["skipped"]:
            checks.append("%d skipped" % a["skipped"])
        checks.append("store %.0f MB" % (a["db_bytes"] / 1e6))
        w("   %-19s %s" % (LABEL[c], "; ".join(checks)))
    w("   (requests: shade_requests_total of model demo (variant primary), which also counts the requests wrk had in flight")
    w("    when it stopped; shadow legs: shade_shadow_legs_total.  hung: at most max_concurrent legs wait for")
    w("    their deadline at a time, every other request's leg is dropped at the cap: the user must not notice)")
print("\n".join(out))
EOF
)
echo
echo "$REPORT"
if [ -n "${BENCH_OUT:-}" ]; then
    mkdir -p "$(dirname "$BENCH_OUT")"
    printf '%s\n' "$REPORT" >"$BENCH_OUT"
    log "report written to $BENCH_OUT"
fi
