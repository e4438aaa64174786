#!/usr/bin/env python3
"""bench/compare_e2e.py — the serving process's CPU per shadowed request
with long answers, end to end: the user's exchange with the primary, the
mirrored exchange with the candidate, the comparison and the SQLite store.

Two simulators answer every request with BENCH_E2E_TOKENS (default 1,500)
words at once (--ttft-ms 0 --tps 0); the candidate runs with --quality 0.8,
so its answer keeps ~80% of the primary's words (similar but different).
Two gateways run in the same run, in front of the same primary:
  off     no shadows: one proxied exchange per request, the baseline;
  shadow  sample 100, aa_percent 0: both exchanges, compare and store.
Each gets BENCH_E2E_REQUESTS (default 2000) requests from
BENCH_E2E_CONNECTIONS (default 4) keep-alive connections; the prompts differ
so the answers do.  The serving process's CPU (all its threads, from
/proc/PID/task/*/schedstat) is read before the first request and after the
last pair is stored (shadow) or the last answer read (off).  Printed: CPU per
request of each, their difference (what shadowing one request costs the
serving process) and the ratio.  Drops (queue_full and others) are printed
too: any drop means the writer did not keep up.

Every process is started here on free loopback ports, in a temporary
directory, and stopped by PID.  Standard library only.  Prints figures;
never fails on timing.

  bench/compare_e2e.py          (SHADE_BIN=bin/shade by default)
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHADE = os.environ.get("SHADE_BIN", os.path.join(ROOT, "bin", "shade"))
TOKENS = int(os.environ.get("BENCH_E2E_TOKENS", "1500"))
REQUESTS = int(os.environ.get("BENCH_E2E_REQUESTS", "2000"))
CONNS = int(os.environ.get("BENCH_E2E_CONNECTIONS", "4"))
DEADLINE = time.monotonic() + float(os.environ.get("BENCH_E2E_TIME_LIMIT", "100"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"compare_e2e: {name} exited at start-up (see its log)")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"compare_e2e: {name} does not listen on {port}")


def cpu_ns(pid):
    """CPU time (ns) of a process: every thread's schedstat."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def serving_pid(master):
    """shade serve's master forks the serving process: that one does the work."""
    for _ in range(100):
        try:
            with open(f"/proc/{master}/task/{master}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("compare_e2e: no serving process under the gateway's master")


def get_json(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body)


def shadow_counters(port):
    doc = get_json(port, "/admin/shadows")
    shadows = doc.get("shadows", doc) if isinstance(doc, dict) else doc
    sh = shadows[0] if isinstance(shadows, list) else shadows
    return sh["counters"]


def body(i):
    return json.dumps({
        "model": "demo",
        "max_tokens": TOKENS,
        "messages": [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": f"Explain, at length, item number {i} of the list, with examples."},
        ],
    }).encode()


def load(port, n):
    """n requests over CONNS keep-alive connections; returns (errors, bytes)."""
    nxt = [0]
    lock = threading.Lock()
    errors = [0]
    got = [0]

    def run():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                i = nxt[0]
                if i >= n or time.monotonic() > DEADLINE:
                    break
                nxt[0] += 1
            try:
                c.request("POST", "/v1/chat/completions", body(i), {"content-type": "application/json"})
                r = c.getresponse()
                data = r.read()
                with lock:
                    got[0] += len(data)
                    if r.status != 200:
                        errors[0] += 1
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.close()

    ts = [threading.Thread(target=run) for _ in range(CONNS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors[0], got[0]


def main():
    if not os.access(SHADE, os.X_OK):
        sys.exit(f"compare_e2e: {SHADE} not found; run make first")
    tmp = tempfile.mkdtemp(prefix="shade-compare-e2e.")
    procs = []

    def start(name, args):
        log = open(os.path.join(tmp, name + ".log"), "w")
        p = subprocess.Popen([SHADE] + args, stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    try:
        sim = ["--ttft-ms", "0", "--tps", "0", "--max-tokens", str(TOKENS), "--seed", "7"]
        pp, pc = free_port(), free_port()
        primary = start("primary", ["sim", "--listen", f"127.0.0.1:{pp}"] + sim)
        cand = start("candidate", ["sim", "--listen", f"127.0.0.1:{pc}", "--quality", "0.8"] + sim)
        wait_port(pp, primary, "primary simulator")
        wait_port(pc, cand, "candidate simulator")
        gws = {}
        for name in ("off", "shadow"):
            port = free_port()
            cfg = os.path.join(tmp, name + ".yaml")
            with open(cfg, "w") as f:
                f.write(f"server:\n  listen: 127.0.0.1:{port}\n  workers: 1\n  shutdown_timeout: 2s\n"
                        f"models:\n  - name: demo\n    backends:\n      - url: http://127.0.0.1:{pp}\n")
                if name == "shadow":
                    f.write("shadows:\n  - name: candidate\n    model: demo\n    backends:\n"
                            f"      - url: http://127.0.0.1:{pc}\n    sample: 100\n    aa_percent: 0\n"
                            "    max_concurrent: 64\n    analysis: { stop_below: 0, interval: 1h }\n"
                            f"shadow_store:\n  path: {os.path.join(tmp, 'pairs.db')}\n")
            p = start("gw-" + name, ["serve", "-c", cfg])
            wait_port(port, p, "gateway " + name)
            gws[name] = (port, serving_pid(p.pid))

        # warm-up: connections, pools, the store's first pages
        for name, (port, _) in gws.items():
            load(port, 50)
        port, _ = gws["shadow"]
        while shadow_counters(port)["stored"] + shadow_counters(port)["dropped"] < 50:
            if time.monotonic() > DEADLINE:
                sys.exit("compare_e2e: time limit during the warm-up")
            time.sleep(0.05)

        res = {}
        for name, (port, pid) in gws.items():
            before = shadow_counters(port) if name == "shadow" else None
            c0, w0 = cpu_ns(pid), time.monotonic()
            errors, nbytes = load(port, REQUESTS)
            if name == "shadow":
                # until every mirrored request is stored or dropped
                while True:
                    now = shadow_counters(port)
                    if now["stored"] + now["dropped"] - before["stored"] - before["dropped"] >= REQUESTS:
                        break
                    if time.monotonic() > DEADLINE:
                        print("compare_e2e: time limit: not every pair was stored", file=sys.stderr)
                        break
                    time.sleep(0.02)
            c1, w1 = cpu_ns(pid), time.monotonic()
            r = {"cpu_ms": (c1 - c0) / 1e6 / REQUESTS, "secs": w1 - w0, "errors": errors,
                 "resp_bytes": nbytes / REQUESTS}
            if name == "shadow":
                now = shadow_counters(port)
                r["stored"] = now["stored"] - before["stored"]
                r["dropped"] = now["dropped"] - before["dropped"]
                r["by_reason"] = {k: v - before["dropped_by_reason"].get(k, 0)
                                  for k, v in now["dropped_by_reason"].items() if v - before["dropped_by_reason"].get(k, 0)}
            res[name] = r

        off, sh = res["off"], res["shadow"]
        print(f"compare_e2e: {REQUESTS} requests per gateway, {CONNS} connections, answers of {TOKENS} "
              f"words (~{off['resp_bytes'] / 1024:.1f} KiB responses); candidate --quality 0.8")
        print(f"{'gateway':<8} {'CPU/request':>12} {'wall':>8} {'req/s':>8} {'errors':>7}  pairs")
        for name, r in (("off", off), ("shadow", sh)):
            pairs = f"stored {r['stored']}, dropped {r['dropped']} {r['by_reason'] or ''}" if name == "shadow" else "-"
            print(f"{name:<8} {r['cpu_ms']:>9.3f} ms {r['secs']:>6.2f} s {REQUESTS / r['secs']:>8.0f} "
                  f"{r['errors']:>7}  {pairs}")
        print(f"shadowing one request costs the serving process {sh['cpu_ms'] - off['cpu_ms']:.3f} ms of CPU "
              f"(mirrored exchange + compare + store); shadow / off = {sh['cpu_ms'] / off['cpu_ms']:.2f}x")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"compare_e2e: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
