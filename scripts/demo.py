#!/usr/bin/env python3
"""The demo behind `make demo`: a shadow rollout, then a progressive one.  examples/shadow.yaml puts
the gateway in front of two primary simulators (127.0.0.1:8001 fast,
127.0.0.1:8002 slower) and mirrors every request to a candidate simulator
(127.0.0.1:8003) with its own latency and answers.  A mixed workload of
streaming and non-streaming chat requests runs; then the gateway's own
measurements (/metrics, /admin/shadows) and, once the gateway has stopped and
flushed its pair store, the shadow report (text here, HTML in a file).
Then examples/rollout.yaml: `demo` moves to a candidate through a shadow
stage and three canary steps to promotion, while `chat` tries a candidate
that fails 15 % of its requests and is rolled back; the decision log comes
from the store (`shade rollout status`).
Then examples/keys.yaml: a request without a key, a virtual key created
with the admin API and limited to 5 requests a minute (x-ratelimit-*
headers, then a 429), rotated and revoked, and the key's spend from the
ledger.
Every process started here is stopped by its PID."""
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "bin", "shade")
GW = 8080
DB = os.path.join(ROOT, "shade-shadow.db")   # examples/shadow.yaml's shadow_store.path
procs = []


def start(args, name):
    p = subprocess.Popen([BIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    procs.append((name, p))
    return p


def wait_port(port, p, name):
    for _ in range(200):
        if p.poll() is not None:
            sys.exit(f"demo: {name} exited: {p.stderr.read().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.025)
    sys.exit(f"demo: {name} is not listening on {port}")


def port_busy(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def one_request(i):
    stream = i % 2 == 1
    body = {"model": "demo", "stream": stream, "max_tokens": 24 + (i % 5) * 8,
            "messages": [{"role": "user", "content": f"Question number {i}: how do gateways work?"}]}
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=30)
    t0 = time.time()
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse()
    ttft = None
    text = ""
    if stream:
        buf = b""
        while True:
            chunk = r.read1(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                data = ev.decode()[6:]
                if data == "[DONE]":
                    continue
                delta = json.loads(data)["choices"][0]["delta"].get("content") or ""
                if delta and ttft is None:
                    ttft = time.time() - t0
                text += delta
    else:
        text = json.loads(r.read())["choices"][0]["message"]["content"]
    backend = r.getheader("x-shade-backend")
    c.close()
    return r.status, backend, stream, time.time() - t0, ttft, text


def admin_shadows():
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=5)
    c.request("GET", "/admin/shadows")
    out = json.loads(c.getresponse().read())
    c.close()
    return out


def metrics():
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=5)
    c.request("GET", "/metrics")
    out = {}
    for line in c.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def quantile(m, name, backend, q):
    """Estimate a quantile from a Prometheus histogram, as histogram_quantile does."""
    pre = f'{name}_bucket{{model="demo",variant="primary",backend="{backend}",le="'
    buckets = sorted((float(k[len(pre):-2]) if not k.endswith('+Inf"}') else float("inf"), v)
                     for k, v in m.items() if k.startswith(pre))
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return None


def main():
    if not os.path.exists(BIN):
        sys.exit("demo: bin/shade is missing; run `make` first")
    for port in (GW, 8001, 8002, 8003):
        if port_busy(port):
            sys.exit(f"demo: port {port} is already in use (examples/shadow.yaml needs 8080, 8001-8003)")
    # a fresh pair store (a state set at run time would otherwise carry over)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(DB + suffix)
        except FileNotFoundError:
            pass
    # the primaries vary a little from call to call, as real models do: that
    # is the noise floor the A/A legs measure
    a = start(["sim", "--listen", "127.0.0.1:8001", "--ttft-ms", "60", "--tps", "150", "--seed", "1",
               "--vary", "0.05"], "sim-a")
    b = start(["sim", "--listen", "127.0.0.1:8002", "--ttft-ms", "140", "--tps", "70", "--seed", "1",
               "--vary", "0.05"], "sim-b")
    # the candidate: faster, but it garbles a fifth of its words (--quality)
    # and fails 2% of requests
    cand = start(["sim", "--listen", "127.0.0.1:8003", "--ttft-ms", "90", "--tps", "200", "--seed", "1",
                  "--vary", "0.05", "--quality", "0.8", "--error-rate", "0.02"], "sim-candidate")
    wait_port(8001, a, "sim-a")
    wait_port(8002, b, "sim-b")
    wait_port(8003, cand, "sim-candidate")
    g = start(["serve", "-c", os.path.join(ROOT, "examples", "shadow.yaml")], "gateway")
    wait_port(GW, g, "gateway")
    print("shade demo: gateway on 127.0.0.1:8080 (examples/shadow.yaml)")
    print("  primary   sim-a 127.0.0.1:8001  ttft 60 ms, 150 tokens/s")
    print("  primary   sim-b 127.0.0.1:8002  ttft 140 ms, 70 tokens/s")
    print("  candidate       127.0.0.1:8003  ttft 90 ms, 200 tokens/s, garbles 20% of words, 2% errors")
    print("  every request is mirrored to the candidate; 10% also go to the primary twice (noise floor)\n")
    n = 80
    print(f"sending {n} chat requests, half streaming, 4 at a time ...")
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(one_request, range(n)))
    wall = time.time() - t0
    ok = sum(1 for r in results if r[0] == 200)
    print(f"  {ok}/{n} answered 200 in {wall:.2f} s")
    for st, be, stream, lat, ttft, text in results[:4]:
        kind = "stream" if stream else "whole "
        t = f", first token {ttft * 1000:.0f} ms" if ttft else ""
        print(f"  [{kind}] {be}: {lat * 1000:.0f} ms{t}: {text[:60]}...")

    m = metrics()
    print("\nwhat the gateway measured (GET /metrics):")
    hdr = f"  {'backend':8} {'requests':>8} {'p50 latency':>12} {'p95 latency':>12} {'p50 TTFT':>9} {'tokens in':>10} {'tokens out':>11}"
    print(hdr)
    for be in ("sim-a", "sim-b"):
        reqs = m.get(f'shade_requests_total{{model="demo",variant="primary",backend="{be}",code="200",class="2xx"}}', 0)
        p50 = quantile(m, "shade_request_duration_seconds", be, 0.5)
        p95 = quantile(m, "shade_request_duration_seconds", be, 0.95)
        t50 = quantile(m, "shade_time_to_first_token_seconds", be, 0.5)
        tin = m.get(f'shade_input_tokens_total{{model="demo",variant="primary",backend="{be}"}}', 0)
        tout = m.get(f'shade_output_tokens_total{{model="demo",variant="primary",backend="{be}"}}', 0)
        fmt = lambda x: f"{x * 1000:.0f} ms" if x is not None else "-"
        print(f"  {be:8} {reqs:8.0f} {fmt(p50):>12} {fmt(p95):>12} {fmt(t50):>9} {tin:10.0f} {tout:11.0f}")
    est = sum(v for k, v in m.items() if k.startswith("shade_usage_estimated_total"))
    print(f"\n  streams without include_usage had their tokens counted from the stream: {est:.0f}")
    print("  (latency and TTFT quantiles are estimated from the histogram buckets, as Prometheus does)")
    sh = admin_shadows()["shadows"][0]
    c = sh["counters"]
    print(f"\nshadow '{sh['name']}' ({sh['state']}): mirrored {c['mirrored']}, stored {c['stored']}, "
          f"dropped {c['dropped']}; candidate legs ok {c['legs']['shadow']['ok']}, "
          f"failed {c['legs']['shadow']['error'] + c['legs']['shadow']['timeout']}")
    # stop the gateway first: the drain waits for the last shadow legs and
    # the writer flushes every pair before the process exits
    g.send_signal(signal.SIGTERM)
    g.wait(timeout=30)
    print("\n--- shade report --db shade-shadow.db " + "-" * 40)
    rep = subprocess.run([BIN, "report", "--db", DB], capture_output=True, text=True)
    print(rep.stdout, end="")
    if rep.returncode != 0:
        print(rep.stderr, end="")
    html = os.path.join(ROOT, "build", "shadow-report.html")
    os.makedirs(os.path.dirname(html), exist_ok=True)
    hr = subprocess.run([BIN, "report", "--db", DB, "--format", "html", "--out", html],
                        capture_output=True, text=True)
    print("-" * 78)
    if hr.returncode == 0:
        print(f"HTML report (side by side, with latency distributions): {html}")
    else:
        print(hr.stderr, end="")
    ok_shadow = ok == n and rep.returncode == 0 and hr.returncode == 0
    return 0 if ok_shadow and rollout_demo() else 1


RDB = os.path.join(ROOT, "shade-rollout.db")   # examples/rollout.yaml's shadow_store.path


def rollout_request(i):
    model = "demo" if i % 2 == 0 else "chat"
    body = {"model": model, "user": f"user-{(i // 2) % 400}", "max_tokens": 16,
            "messages": [{"role": "user", "content": f"Question number {i % 50}: how do rollouts work?"}]}
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=30)
    c.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def rollouts():
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=5)
    c.request("GET", "/admin/rollouts")
    out = {r["name"]: r for r in json.loads(c.getresponse().read())["rollouts"]}
    c.close()
    return out


def rollout_demo():
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(RDB + suffix)
        except FileNotFoundError:
            pass
    sims = [("demo-v1", 8001, []), ("chat-v1", 8002, []), ("demo-v2", 8004, []),
            ("chat-v2", 8005, ["--error-rate", "0.15"])]
    # the shadow part's simulators are stopped first: fresh ones here
    for name, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
    for name, port, _ in sims:
        if port_busy(port):
            sys.exit(f"demo: port {port} is already in use (examples/rollout.yaml needs 8080, 8001-8005)")
    started = []
    for name, port, extra in sims:
        started.append((port, start(["sim", "--listen", f"127.0.0.1:{port}", "--ttft-ms", "5", "--tps", "0",
                                     "--seed", "1", *extra], name), name))
    for port, p, name in started:
        wait_port(port, p, name)
    g = start(["serve", "-c", os.path.join(ROOT, "examples", "rollout.yaml")], "gateway (rollouts)")
    wait_port(GW, g, "gateway (rollouts)")
    print("\n" + "=" * 78)
    print("shade demo, part 2: rollouts (examples/rollout.yaml)")
    print("  demo -> demo-v2 (healthy): a shadow stage, then 10 %, 30 %, 60 % of users, then promotion")
    print("  chat -> chat-v2 (fails 15 % of its requests): canary steps 10 %, 30 %, 60 %")
    print("  users stick to their arm; every decision is an anytime-valid test\n")
    seen, i, t0 = {}, 0, time.time()
    final = ("promoted", "rolled_back", "frozen")
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        while time.time() - t0 < 120:
            list(ex.map(rollout_request, range(i, i + 40)))
            i += 40
            state = rollouts()
            for name, r in state.items():
                key = (r["phase"], r["step"])
                if seen.get(name) != key:
                    seen[name] = key
                    where = f"step {r['step']} at {r['share']:g} %" if r["phase"] == "canary" else f"{r['share']:g} %"
                    print(f"  {time.time() - t0:5.1f} s  {name:8} {r['phase']:11} {where:16} {r['reason'][:90]}")
            if all(r["phase"] in final for r in state.values()):
                break
    state = rollouts()
    g.send_signal(signal.SIGTERM)
    g.wait(timeout=30)
    print(f"\n  {i} requests sent in {time.time() - t0:.0f} s")
    print("\n--- shade rollout status --db shade-rollout.db " + "-" * 31)
    st = subprocess.run([BIN, "rollout", "status", "--db", RDB], capture_output=True, text=True)
    print(st.stdout, end="")
    print(st.stderr, end="")
    print("-" * 78)
    ok = (st.returncode == 0 and state["demo-v2"]["phase"] == "promoted"
          and state["chat-v2"]["phase"] == "rolled_back")
    return ok and keys_demo()


KDB = os.path.join(ROOT, "shade-keys.db")   # examples/keys.yaml's shadow_store.path
ADMIN_KEY = "demo-admin-key-0123456789"


def call(method, path, body=None, key=None, admin=False):
    c = http.client.HTTPConnection("127.0.0.1", GW, timeout=30)
    h = {"content-type": "application/json"}
    if key:
        h["authorization"] = f"Bearer {key}"
    if admin:
        h["x-shade-admin-key"] = ADMIN_KEY
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def ask(key):
    return call("POST", "/v1/chat/completions", {"model": "demo", "max_tokens": 16,
                "messages": [{"role": "user", "content": "How do API keys work?"}]}, key=key)


def keys_demo():
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(KDB + suffix)
        except FileNotFoundError:
            pass
    for name, p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
    sim = start(["sim", "--listen", "127.0.0.1:8001", "--ttft-ms", "5", "--tps", "0", "--seed", "1"], "sim (keys)")
    wait_port(8001, sim, "sim (keys)")
    os.environ["SHADE_DEMO_TEAM_KEY"] = "sk-demo-team-a-0123456789"
    os.environ["SHADE_DEMO_ADMIN_KEY"] = ADMIN_KEY
    g = start(["serve", "-c", os.path.join(ROOT, "examples", "keys.yaml")], "gateway (keys)")
    wait_port(GW, g, "gateway (keys)")
    print("\n" + "=" * 78)
    print("shade demo, part 3: keys, limits and budgets (examples/keys.yaml)\n")
    ok = True
    st, _, data = ask(None)
    print(f"  no key                      -> {st} {json.loads(data)['error']['code']}")
    ok &= st == 401
    st, _, data = call("POST", "/admin/keys", {"name": "demo-app", "limits": {"rpm": 5},
                                               "budget": {"usd": 1, "period": "day"}}, admin=True)
    k = json.loads(data)
    print(f"  POST /admin/keys            -> {st}: id {k['id']}, secret {k['prefix']}... (shown once)")
    ok &= st == 201
    for i in range(6):
        st, h, data = ask(k["key"])
        more = (f"remaining {h['x-ratelimit-remaining-requests']} of {h['x-ratelimit-limit-requests']}, "
                f"full again in {h['x-ratelimit-reset-requests']}") if st == 200 else \
            f"{json.loads(data)['error']['code']}, Retry-After {h.get('retry-after')} s"
        print(f"  request {i + 1} with the key      -> {st}  {more}")
        ok &= st == (200 if i < 5 else 429)
    st, _, data = call("POST", f"/admin/keys/{k['id']}/rotate", admin=True)
    new = json.loads(data)["key"]
    print(f"  rotate                      -> {st}; the old secret now gets {ask(k['key'])[0]}, "
          f"the new one {ask(new)[0]} (its limits and ledger are kept)")
    st, _, _ = call("POST", f"/admin/keys/{k['id']}/revoke", admin=True)
    time.sleep(0.1)
    print(f"  revoke                      -> {st}; the key now gets {ask(new)[0]}")
    for _ in range(3):
        ask("sk-demo-team-a-0123456789")
    time.sleep(1.5)  # the ledger is written every second
    for kid in (k["id"], "cfg:team-a"):
        st, _, data = call("GET", f"/admin/keys/{kid}/usage", admin=True)
        u = json.loads(data)
        t = u["total"]
        print(f"  GET /admin/keys/{kid}/usage -> {t['requests']} requests, {t['tokens_in']} + {t['tokens_out']} "
              f"tokens, ${t['cost_usd']:.6f}; budget {u['budget']['period']} ${u['budget']['usd']:g}")
        ok &= st == 200 and t["requests"] > 0
    g.send_signal(signal.SIGTERM)
    g.wait(timeout=30)
    print("-" * 78)
    return ok


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        print("stopped: " + ", ".join(f"{n} (pid {p.pid})" for n, p in procs))
    sys.exit(rc)
