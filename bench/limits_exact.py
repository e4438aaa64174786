#!/usr/bin/env python3
"""bench/limits_exact.py — a tpm limit under 1,000 concurrent streaming
clients, 2 workers, 5 reloads under load (make bench-limits).

Starts a simulator and `shade serve` (one key with `tpm: LIMIT`), opens
CLIENTS connections that each stream chat completions in a loop for
DURATION seconds, and sends SIGHUP to the master RELOADS times during the
run.  Every answer's usage is summed.  A token bucket admits at most its
capacity plus its refill over the run; reserve-then-settle promises at
most one request's reservation more.  Prints both and the margin.

usage: limits_exact.py [--clients N] [--duration S] [--reloads N] [--tpm N]
Every process started here is stopped by PID; 127.0.0.1 only.
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, free_port, stop_all, wait_port

KEY = "sk-exact-0123456789"


async def client(port, body, stop, out):
    req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            out["errors"] += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while not stop.is_set():
                w.write(req)
                await w.drain()
                head = await r.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                hdrs = head.decode("latin-1").lower()
                data = b""
                if "transfer-encoding: chunked" in hdrs:
                    while True:
                        size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                        chunk = await r.readexactly(size + 2)
                        if size == 0:
                            break
                        data += chunk[:-2]
                else:
                    n = int(hdrs.split("content-length:")[1].split("\r\n")[0])
                    data = await r.readexactly(n)
                out["codes"][status] = out["codes"].get(status, 0) + 1
                if status == 200:
                    for line in data.split(b"\n"):
                        if line.startswith(b"data: {") and b'"usage":{' in line:
                            u = json.loads(line[6:]).get("usage")
                            if u:
                                out["tokens"] += u["total_tokens"]
                else:
                    await asyncio.sleep(0.2)
                if "connection: close" in hdrs:
                    break
        except (OSError, asyncio.IncompleteReadError, ValueError):
            out["errors"] += 1
        finally:
            w.close()


async def run(args, port, master):
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "tell me a story"}],
                       "max_tokens": args.max_tokens, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    stop = asyncio.Event()
    out = {"codes": {}, "tokens": 0, "errors": 0}
    t0 = time.time()
    tasks = [asyncio.create_task(client(port, body, stop, out)) for _ in range(args.clients)]
    for i in range(args.reloads):
        await asyncio.sleep(args.duration / (args.reloads + 1))
        os.kill(master.pid, signal.SIGHUP)
    await asyncio.sleep(max(0.0, args.duration - (time.time() - t0)))
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    return out, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=12)
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--tpm", type=int, default=20000)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="shade-exact-")
    procs = []
    try:
        sp, gp = free_port(), free_port()
        procs.append(subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sp}", "--ttft-ms", "50", "--tps", "200",
                                       "--max-tokens", str(args.max_tokens), "--workers", "2"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(sp)
        cfg = os.path.join(tmp, "gw.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server:
  listen: 127.0.0.1:{gp}
  workers: 2
  log_level: error
models:
  - name: demo
    backends:
      - url: http://127.0.0.1:{sp}
auth:
  keys:
    - name: exact
      key_env: SHADE_EXACT_KEY
      limits: {{ tpm: {args.tpm} }}
""")
        env = dict(os.environ, SHADE_EXACT_KEY=KEY)
        master = subprocess.Popen([BIN, "serve", "-c", cfg], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(tmp, "gw.log"), "w"))
        procs.append(master)
        wait_port(gp)
        time.sleep(0.5)
        out, elapsed = asyncio.run(run(args, gp, master))
        reservation = args.max_tokens + 10
        bound = args.tpm + args.tpm * elapsed / 60
        print(f"tpm limit exactness: {args.clients} streaming clients, 2 workers, {args.reloads} reloads, "
              f"{elapsed:.1f} s")
        print(f"  answers by status        {dict(sorted(out['codes'].items()))}  (connection errors: {out['errors']})")
        print(f"  tokens admitted          {out['tokens']}")
        print(f"  capacity + refill        {bound:.0f}   (+ one reservation: {bound + reservation:.0f})")
        print(f"  admitted / bound         {out['tokens'] / bound:.3f}")
        print(f"  within one reservation   {'yes' if out['tokens'] <= bound + reservation else 'NO'}")
        return 0 if out["tokens"] <= bound + reservation else 1
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
