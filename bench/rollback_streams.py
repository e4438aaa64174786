#!/usr/bin/env python3
"""bench/rollback_streams.py — a rollback during 500 open streams cuts none
(make bench-rollouts; the black-box suite runs the same with 60).

Starts a baseline and a candidate simulator that stream for about three
seconds, and `shade serve` with one rollout held at 50 %.  Opens STREAMS
streaming chat completions at once (users s0..sN, so about half are on the
canary), rolls the rollout back through the admin API while they are
open, then sends requests that must all go to the baseline.  Every stream
must end with `data: [DONE]` and the full number of tokens.

usage: rollback_streams.py [--streams N]
Every process started here is stopped by PID; 127.0.0.1 only.
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import BIN, free_port, stop_all, wait_port

TOKENS = 90


async def stream(port, user, out):
    body = json.dumps({"model": "demo", "user": user, "stream": True, "max_tokens": TOKENS,
                       "messages": [{"role": "user", "content": "tell me a long story"}]}).encode()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await w.drain()
    data = await r.read()
    w.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    variant = ""
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("x-shade-variant:"):
            variant = line.split(":", 1)[1].strip()
    status = int(head.split(b" ", 2)[1])
    # de-chunk
    body, text_events = b"", 0
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2:]
    events = [e[6:] for e in body.decode().split("\n") if e.startswith("data: ")]
    for e in events:
        if e != "[DONE]" and json.loads(e)["choices"] and json.loads(e)["choices"][0]["delta"].get("content"):
            text_events += 1
    out.append((status, variant, events[-1:] == ["[DONE]"], text_events))


def admin(port, method, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read() or b"{}")


async def run(port, n):
    out = []
    tasks = [asyncio.create_task(stream(port, f"s{i}", out)) for i in range(n)]
    await asyncio.sleep(1.0)  # every stream is open, none finished (they last ~3 s)
    open_at_rollback = n - len(out)
    st, _ = await asyncio.to_thread(admin, port, "POST", "/admin/rollouts/v2/rollback")
    t_rb = time.time()
    while (await asyncio.to_thread(admin, port, "GET", "/admin/rollouts/v2"))[1]["phase"] != "rolled_back":
        await asyncio.sleep(0.05)
    after = []
    await asyncio.gather(*[stream(port, f"s{i}", after) for i in range(40)])
    await asyncio.gather(*tasks)
    return out, after, open_at_rollback, st, time.time() - t_rb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=500)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="shade-rbs-")
    procs = []
    try:
        bp, cp, gp = free_port(), free_port(), free_port()
        for port in (bp, cp):
            procs.append(subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{port}", "--ttft-ms", "20", "--tps",
                                           "30", "--max-tokens", str(TOKENS), "--workers", "2"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
        cfg = os.path.join(tmp, "gw.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server:
  listen: 127.0.0.1:{gp}
  workers: 2
  log_level: error
models:
  - name: demo
    backends: [{{ url: "http://127.0.0.1:{bp}" }}]
  - name: demo-v2
    backends: [{{ url: "http://127.0.0.1:{cp}" }}]
rollouts:
  - name: v2
    model: demo
    candidate: demo-v2
    variant_header: true
    steps:
      - {{ percent: 50, min_duration: 1h, min_requests: 1000000 }}
shadow_store:
  path: {os.path.join(tmp, "store.db")}
""")
        procs.append(subprocess.Popen([BIN, "serve", "-c", cfg], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(tmp, "gw.log"), "w")))
        wait_port(gp)
        time.sleep(0.5)
        out, after, open_n, st, _ = asyncio.run(run(gp, args.streams))
        canary = [x for x in out if x[1] == "canary"]
        whole = [x for x in out if x[0] == 200 and x[2] and x[3] == TOKENS]
        print(f"rollback during open streams: {args.streams} streams of {TOKENS} tokens (~3 s each), 2 workers")
        print(f"  open when the rollback was asked for   {open_n}  (rollback answered {st})")
        print(f"  on the canary                          {len(canary)}")
        print(f"  ended whole ([DONE], {TOKENS} tokens)       {len(whole)} of {len(out)}")
        print(f"  requests after the rollback            {len(after)}, on the baseline: "
              f"{sum(1 for x in after if x[1] == 'baseline')}")
        ok = len(whole) == args.streams and open_n == args.streams and all(x[1] == "baseline" for x in after)
        print(f"  none cut                               {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
