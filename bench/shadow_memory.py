#!/usr/bin/env python3
"""Peak RSS of the serving process while mirroring requests with large
prompts: a measurement, not a test (no assertion).

usage: [SHADE_BIN=bin/shade] bench/shadow_memory.py [REQUESTS] [CLIENTS] [PROMPT_MB]
       SHADOW_EXTRA="aa_percent: 0" (YAML lines for the shadow; "state: paused"
       gives the same load without mirroring, the floor)

A primary simulator answers at once, the candidate after 300 ms, so legs
pile up to max_concurrent while clients keep sending."""
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "bb"))
import harness  # noqa: E402
import test_shadow as T  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 40
CONC = int(sys.argv[2]) if len(sys.argv) > 2 else 4
MB = int(sys.argv[3]) if len(sys.argv) > 3 else 8
EXTRA = os.environ.get("SHADOW_EXTRA", "aa_percent: 0")


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) // 1024
    return 0


def main():
    env = harness.Env()
    try:
        primary = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 16)
        cand = env.sim("--ttft-ms", 300, "--tps", 0, "--max-tokens", 16)
        db = os.path.join(env.tmp, "pairs.db")
        cfg = T.shadow_config(primary, f"http://127.0.0.1:{cand}", db, EXTRA + "\nmax_concurrent: 32")
        gw = env.gateway(cfg.replace("workers: 2", "workers: 2\n  max_body_bytes: 64MiB"))
        serving = env.last_gateway.children()[0]
        body = json.dumps(harness.chat("x" * (MB << 20), max_tokens=16)).encode()
        peak = [0]
        done = threading.Event()

        def sampler():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], status(serving, "VmRSS"))
                except OSError:
                    pass
                time.sleep(0.02)

        todo = list(range(N))
        lock = threading.Lock()

        def client():
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                st, _, _ = harness.post(gw, body, timeout=120)
                assert st == 200, st

        th = threading.Thread(target=sampler)
        th.start()
        t0 = time.time()
        cs = [threading.Thread(target=client) for _ in range(CONC)]
        for c in cs:
            c.start()
        for c in cs:
            c.join()
        c = T.settled(gw)
        done.set()
        th.join()
        print(f"{harness.BIN}: {N} requests, {CONC} clients, {MB} MB prompts, shadow [{EXTRA}]: "
              f"peak RSS {max(peak[0], status(serving, 'VmHWM'))} MB, after {status(serving, 'VmRSS')} MB, "
              f"mirrored {c['mirrored']} stored {c['stored']} dropped {c['dropped']}, {time.time() - t0:.1f} s")
        T.stop_gateway(env)
    finally:
        env.close()


if __name__ == "__main__":
    main()
