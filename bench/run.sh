#!/usr/bin/env bash
# bench/run.sh — shade vs nginx vs the simulator alone, on 127.0.0.1.
#
# Measures, in one run (doc/benchmarks.md explains how to read the results):
#   1. throughput and latency under load (wrk, non-streaming chat completions)
#      for: the simulator directly, shade in front of it, nginx proxy_pass in
#      front of it — same simulator, same request, same worker count;
#   2. unloaded latency (one connection) for the same three paths;
#   3. streaming time to first token for the same three paths, against a
#      simulator with a fixed TTFT (bench/ttft.py).
# Every process is started here, on free loopback ports, and stopped by PID
# on exit.  Nothing is written outside a temporary directory unless asked.
#
# Environment (all optional):
#   SHADE_BIN           gateway binary (default bin/shade)
#   BENCH_CONNECTIONS   wrk connections under load (default 50)
#   BENCH_DURATION      seconds per measured load run (default 8)
#   BENCH_WARMUP        seconds of warm-up before each load run (default 2)
#   BENCH_ROUNDS        load rounds; the median is reported (default 2)
#   BENCH_UNLOADED      seconds of the single-connection run (default 5)
#   BENCH_TTFT_N        streaming requests per path (default 200)
#   BENCH_PIN           CPU placement: auto (default), none, split or one
#                       (see "CPU placement" below)
#   BENCH_PHASES        which measurements to run (default "load unloaded ttft")
#   BENCH_WORKERS       workers for shade, nginx and the sim (default 1)
#   BENCH_TIME_LIMIT    hard limit for the whole run, seconds (default 175)
#   BENCH_SAVE=1        also write the report to bench/results/DATE-HOST.txt
#   BENCH_OUT=FILE      also write the report to FILE
#   BENCH_KEEP=1        keep the temporary directory (configs, logs, raw data)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SHADE=${SHADE_BIN:-$ROOT/bin/shade}
CONNS=${BENCH_CONNECTIONS:-50}
DURATION=${BENCH_DURATION:-8}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
UNLOADED=${BENCH_UNLOADED:-5}
TTFT_N=${BENCH_TTFT_N:-200}
WORKERS=${BENCH_WORKERS:-1}
PHASES=${BENCH_PHASES:-load unloaded ttft}
LIMIT=${BENCH_TIME_LIMIT:-175}
NCPU=$(nproc 2>/dev/null || echo 1)
PIN=${BENCH_PIN:-auto}
[ "$NCPU" -ge 2 ] || PIN=none
# simulator settings: load phase (as fast as possible) and streaming phase
SIM_LOAD_ARGS=(--ttft-ms 0 --tps 0 --max-tokens 16)
SIM_TTFT_ARGS=(--ttft-ms 20 --tps 200 --max-tokens 4)

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
# Install what is missing with apt-get (sudo only when not root and present).
install_pkgs() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "missing packages ($*) and not root; install them: apt-get install $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null || die "missing packages ($*) and no apt-get"
    # the Debian nginx package starts a system nginx on :80 when installed;
    # if one appears because of this install, it is stopped again below
    local had_sys_nginx=0
    [ -e /run/nginx.pid ] && had_sys_nginx=1
    log "installing: $*"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if [ "$had_sys_nginx" = 0 ] && [ -e /run/nginx.pid ]; then
        log "stopping the system nginx that the package installation started"
        "${sudo[@]}" "$(command -v nginx || echo /usr/sbin/nginx)" -s quit 2>/dev/null || true
    fi
}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v taskset >/dev/null || need+=(util-linux)
command -v pgrep >/dev/null || need+=(procps)
command -v python3 >/dev/null || need+=(python3)
command -v timeout >/dev/null || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    need=($(printf '%s\n' "${need[@]}" | sort -u))
    install_pkgs "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$SHADE" ] || die "$SHADE not found; run 'make' first"
"$SHADE" sim --help >/dev/null 2>&1 || die "'$SHADE sim' does not work in this build"

# ---------------------------------------------------------------- processes
T=$(mktemp -d "${TMPDIR:-/tmp}/shade-bench.XXXXXX")
chmod 755 "$T"   # nginx workers may run as another user when we are root
PIDS=()          # every server process started here
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
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [ -n "$FG_PID" ]; then   # timeout passes the signal on to its command
        kill -TERM "$FG_PID" 2>/dev/null || true
        wait "$FG_PID" 2>/dev/null || true
    fi
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
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

# CPU placement (doc/benchmarks.md has the measurements behind the default).
#   auto   under load nothing is pinned: the scheduler spreads wrk, the proxy
#          and the sim over the CPUs; for the one-connection and TTFT runs,
#          where a request visits client, proxy and sim strictly in turn,
#          all of them share CPU 1, so that where the scheduler happens to
#          put each process does not decide the result (default);
#   none   nothing pinned, ever;
#   split  servers on CPUs 1.., wrk on CPU 0; the one-connection and TTFT
#          runs as in auto;
#   one    everything on CPU 1, also under load.
LOAD_SRV_CPUS='' LOAD_CPUS='' SEQ_CPUS=''
if [ "$NCPU" = 2 ]; then REST=1; else REST=1-$((NCPU - 1)); fi
case $PIN in
auto)  SEQ_CPUS=1
       PIN_DESC="auto: under load none; one-connection and TTFT runs: client, proxy and sim all on CPU 1" ;;
none)  PIN_DESC="none: the scheduler places every process" ;;
split) LOAD_SRV_CPUS=$REST LOAD_CPUS=0 SEQ_CPUS=1
       PIN_DESC="split: under load sim and proxy on CPU $REST, wrk on CPU 0; one-connection and TTFT runs: all on CPU 1" ;;
one)   LOAD_SRV_CPUS=1 LOAD_CPUS=1 SEQ_CPUS=1
       PIN_DESC="one: every process on CPU 1" ;;
*)     die "BENCH_PIN must be auto, none, split or one" ;;
esac
SRV_PIN=() LOAD_PIN=() SEQ_PIN=()   # command prefixes
[ -z "$LOAD_SRV_CPUS" ] || SRV_PIN=(taskset -c "$LOAD_SRV_CPUS")
[ -z "$LOAD_CPUS" ] || LOAD_PIN=(taskset -c "$LOAD_CPUS")
[ -z "$SEQ_CPUS" ] || SEQ_PIN=(taskset -c "$SEQ_CPUS")
# repin_servers CPUS : move the running servers (every thread, and nginx's
# workers) to CPUS
repin_servers() {
    local p
    [ -n "$1" ] || return 0
    for p in "${PIDS[@]}" $(pgrep -P "$(IFS=,; echo "${PIDS[*]}")" || true); do
        taskset -a -c -p "$1" "$p" >/dev/null || die "cannot pin pid $p to CPU $1"
    done
}

# start_bg NAME CMD... : run CMD in the background, output to $T/NAME.log;
# sets LAST_PID (taskset execs, so that is the server's own PID)
start_bg() {
    local name=$1; shift
    "${SRV_PIN[@]}" "$@" >"$T/$name.log" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    echo "$LAST_PID" >>"$T/pids"
}
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}
# cpu_ns PID... : CPU time (ns) used so far by these processes, all their
# threads and their direct children (nginx's workers)
cpu_ns() {
    local sum=0 p f v
    for p in "$@" $(pgrep -P "$(IFS=,; echo "$*")" || true); do
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

# ---------------------------------------------------------------- inputs
# A realistic chat request: system prompt, three turns, 1.3 KB.
cat >"$T/chat.json" <<'EOF'
{"model":"demo","messages":[{"role":"system","content":"You are a careful senior software engineer helping a colleague review C code for a network service. Answer precisely, cite the relevant lines, and prefer short concrete suggestions over general advice. If something is ambiguous, say what you would need to know."},{"role":"user","content":"Here is the read path of our connection handler:\n\nstatic void on_read(struct conn *c) {\n    for (;;) {\n        ssize_t n = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);\n        if (n > 0) { c->in.len += n; continue; }\n        if (n == 0) { conn_close(c); return; }\n        if (errno == EAGAIN) break;\n        conn_close(c); return;\n    }\n    parse(c);\n}\n\nDo you see any problem with it?"},{"role":"assistant","content":"Two things stand out. First, when the buffer is full (len == cap) read() is called with a length of zero and returns 0, which the loop treats as end of file and closes a healthy connection. Second, EINTR is treated as a fatal error. Grow the buffer, or stop reading and parse, before it is full, and retry on EINTR."},{"role":"user","content":"Good catch on the full buffer. If I grow it, how do I stop a client from making us allocate without limit? Should the cap be per connection or global?"}],"max_tokens":16,"temperature":0.7,"stream":false}
EOF
python3 - "$T/chat.json" "$T/chat-stream.json" <<'EOF'
import json, sys
body = json.load(open(sys.argv[1]))           # also validates the JSON above
body["stream"] = True
body["max_tokens"] = 4
with open(sys.argv[2], "w") as f:
    json.dump(body, f, separators=(",", ":"))
EOF
truncate -s -1 "$T/chat.json"   # drop the heredoc's final newline
BODY_BYTES=$(stat -c %s "$T/chat.json")

cat >"$T/chat.lua" <<EOF
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("$T/chat.json", "rb"))
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "rps=%.1f requests=%d p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d errors=%d status_errors=%d\n",
        summary.requests / (summary.duration / 1e6), summary.requests,
        latency:percentile(50), latency:percentile(90), latency:percentile(99),
        latency.mean, latency.max, e.connect + e.read + e.write + e.timeout, e.status))
end
EOF

# ---------------------------------------------------------------- servers
# start_paths TAG SIM_ARGS... : a simulator, shade and nginx in front of it;
# sets URL_direct, URL_shade, URL_nginx and HP_* (host:port)
start_paths() {
    local tag=$1; shift
    local ports p_sim p_shade p_nginx
    ports=$(free_ports 3)
    read -r p_sim p_shade p_nginx <<<"$ports"

    start_bg "sim-$tag" "$SHADE" sim --listen "127.0.0.1:$p_sim" --workers "$WORKERS" "$@"
    local sim_pid=$LAST_PID

    cat >"$T/shade-$tag.yaml" <<EOF
server:
  listen: 127.0.0.1:$p_shade
  workers: $WORKERS
  shutdown_timeout: 2s
models:
  - name: demo
    backends:
      - url: http://127.0.0.1:$p_sim
        name: sim
EOF
    start_bg "shade-$tag" "$SHADE" serve -c "$T/shade-$tag.yaml"
    local shade_pid=$LAST_PID

    mkdir -p "$T/nginx-$tag"
    local user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root;"   # workers as root: no access problems in $T
    cat >"$T/nginx-$tag.conf" <<EOF
# generated by bench/run.sh: nginx as a plain reverse proxy, on loopback
daemon off;
master_process on;
worker_processes $WORKERS;
$user_line
pid $T/nginx-$tag/nginx.pid;
error_log $T/nginx-$tag/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $T/nginx-$tag/client_body;
    proxy_temp_path $T/nginx-$tag/proxy;
    fastcgi_temp_path $T/nginx-$tag/fastcgi;
    uwsgi_temp_path $T/nginx-$tag/uwsgi;
    scgi_temp_path $T/nginx-$tag/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream sim {
        server 127.0.0.1:$p_sim;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$p_nginx;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    start_bg "nginx-$tag" "$NGINX" -p "$T/nginx-$tag" -e "$T/nginx-$tag/error.log" -c "$T/nginx-$tag.conf"
    local nginx_pid=$LAST_PID

    wait_port "sim-$tag" "$sim_pid" "$p_sim"
    wait_port "shade-$tag" "$shade_pid" "$p_shade"
    wait_port "nginx-$tag" "$nginx_pid" "$p_nginx"
    SIM_PID=$sim_pid
    # shellcheck disable=SC2034  # read through ${!v}
    PID_direct=$sim_pid PID_shade=$shade_pid PID_nginx=$nginx_pid
    HP_direct=127.0.0.1:$p_sim
    HP_shade=127.0.0.1:$p_shade
    HP_nginx=127.0.0.1:$p_nginx
    # shellcheck disable=SC2034  # read through ${!u}
    URL_direct=http://$HP_direct
    # shellcheck disable=SC2034
    URL_shade=http://$HP_shade
    # shellcheck disable=SC2034
    URL_nginx=http://$HP_nginx
}

# check_path NAME URL BODY : one request must succeed before measuring
check_path() {
    timeout 10 python3 - "$2/v1/chat/completions" "$3" "$1" <<'EOF' || die "sanity request through $1 failed"
import sys, urllib.request
url, body, name = sys.argv[1], open(sys.argv[2], "rb").read(), sys.argv[3]
req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as r:
    data = r.read()
    if r.status != 200 or b"choices" not in data:
        sys.exit("%s: HTTP %d %r" % (name, r.status, data[:200]))
EOF
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

# run_wrk TARGET CONNS SECONDS [PIN...] : sets RES to wrk's summary line (see
# chat.lua), the CPU time the sim and the proxy used per request, and how
# much CPU everything else on the machine used meanwhile (other_cpu_pct, in
# % of one core: wrk's own time is excluded; a few % is kernel noise)
run_wrk() {
    local t=$1 conns=$2 secs=$3 out u=URL_$1 p=PID_$1 sim0 px0 sys0 sim1 px1 sys1 n wrk_ns other
    shift 3
    sim0=$(cpu_ns "$SIM_PID")
    px0=$(cpu_ns "${!p}")
    sys0=$(sys_busy_ns)
    times >"$T/times0"   # builtin, no fork: CPU time of the children reaped so far
    fg_run $((secs + 20)) "$T/wrk.out" "$@" wrk -t1 -c"$conns" -d"${secs}s" --timeout 5s -s "$T/chat.lua" "${!u}" \
        || die "wrk failed against $t: $(cat "$T/wrk.out")"
    times >"$T/times1"   # ... now including wrk
    sys1=$(sys_busy_ns)
    sim1=$(cpu_ns "$SIM_PID")
    px1=$(cpu_ns "${!p}")
    wrk_ns=$(($(children_ns "$T/times1") - $(children_ns "$T/times0")))
    out=$(cat "$T/wrk.out")
    out=$(grep '^rps=' <<<"$out") || die "no wrk summary for $t: $out"
    n=0
    if [[ $out =~ requests=([0-9]+) ]]; then n=${BASH_REMATCH[1]}; fi
    [ "$n" -gt 0 ] || die "no request completed against $t"
    if [ "$t" = direct ]; then px1=0 px0=0; fi
    other=$(((sys1 - sys0 - (sim1 - sim0) - (px1 - px0) - wrk_ns) / secs / 10000000))
    RES="$out sim_cpu_us=$(((sim1 - sim0) / n / 10))e-2 proxy_cpu_us=$(((px1 - px0) / n / 10))e-2"
    RES+=" proxy_cpu_pct=$(((px1 - px0) / secs / 10000000)) wrk_cpu_pct=$((wrk_ns / secs / 10000000))"
    RES+=" other_cpu_pct=$((other < 0 ? 0 : other))"
}

# ---------------------------------------------------------------- run
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
    echo "META versions=shade_$("$SHADE" --version | awk '{print $2}')_(git_$GIT_REV),_$("$NGINX" -v 2>&1 | sed 's/.*: //; s/ /_/g'),_wrk_$(wrk -v 2>&1 | awk 'NR==1 {print $2}'),_workers=$WORKERS"
    echo "META connections=$CONNS duration=$DURATION warmup=$WARMUP rounds=$ROUNDS body_bytes=$BODY_BYTES"
    echo "META unloaded_duration=$UNLOADED ttft_n=$TTFT_N ttft_sim=$(IFS=_; echo "${SIM_TTFT_ARGS[*]}")"
} >>"$RAW"

has_phase() { [[ " $PHASES " == *" $1 "* ]]; }

if has_phase load || has_phase unloaded; then
    log "phase 1: load (sim ${SIM_LOAD_ARGS[*]})"
    start_paths load "${SIM_LOAD_ARGS[@]}"
    for t in direct shade nginx; do
        u=URL_$t
        check_path "$t" "${!u}" "$T/chat.json"
    done
    if has_phase load; then
        for r in $(seq "$ROUNDS"); do
            # alternate the order between rounds so that drift does not favour one path
            if [ $((r % 2)) = 1 ]; then order="direct shade nginx"; else order="nginx shade direct"; fi
            for t in $order; do
                run_wrk "$t" "$CONNS" "$WARMUP" "${LOAD_PIN[@]}"
                run_wrk "$t" "$CONNS" "$DURATION" "${LOAD_PIN[@]}"
                log "  round $r $t: $RES"
                echo "LOAD round=$r target=$t $RES" >>"$RAW"
            done
        done
    fi
    if has_phase unloaded; then
        log "phase 2: unloaded latency (1 connection)"
        repin_servers "$SEQ_CPUS"
        for t in direct shade nginx; do
            run_wrk "$t" 1 1 "${SEQ_PIN[@]}"
            run_wrk "$t" 1 "$UNLOADED" "${SEQ_PIN[@]}"
            log "  $t: $RES"
            echo "UNLOADED target=$t $RES" >>"$RAW"
        done
    fi
    stop_all
fi

if has_phase ttft; then
    log "phase 3: streaming TTFT (sim ${SIM_TTFT_ARGS[*]})"
    SRV_PIN=("${SEQ_PIN[@]}")
    start_paths ttft "${SIM_TTFT_ARGS[@]}"
    fg_run 90 "$T/ttft.out" "${SEQ_PIN[@]}" python3 "$ROOT/bench/ttft.py" -n "$TTFT_N" "$T/chat-stream.json" \
        "direct=$HP_direct" "shade=$HP_shade" "nginx=$HP_nginx" || die "ttft.py failed: $(cat "$T/ttft.out")"
    grep '^TTFT ' "$T/ttft.out" >>"$RAW" || die "ttft.py printed no result: $(cat "$T/ttft.out")"
    stop_all
fi

BUSY_AFTER=$(cpu_busy)
echo "META background_busy_after=$BUSY_AFTER" >>"$RAW"
REPORT=$(python3 "$ROOT/bench/report.py" "$RAW")
echo
echo "$REPORT"
dest=${BENCH_OUT:-}
if [ -z "$dest" ] && [ "${BENCH_SAVE:-0}" = 1 ]; then
    dest=$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)-$(hostname -s 2>/dev/null || echo host).txt
fi
if [ -n "$dest" ]; then
    mkdir -p "$(dirname "$dest")"
    printf '%s\n' "$REPORT" >"$dest"
    log "report written to $dest"
fi
