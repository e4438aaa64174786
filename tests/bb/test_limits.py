"""Per-key limits and budgets (auth.keys[].limits, model_limits, budget):
reserve at admission, settle at finish, in the shared state — exact across
workers, kept across a reload; the 429s and x-ratelimit-* headers an
OpenAI client expects — against the real binary."""
import json
import os
import signal
import tempfile
import threading
import time

import harness
from harness import chat, metrics, post, request

os.environ["SHADE_TEST_LIM_A"] = "sk-lim-a-0123456789"
os.environ["SHADE_TEST_LIM_B"] = "sk-lim-b-0123456789"
A = {"authorization": "Bearer sk-lim-a-0123456789"}
B = {"authorization": "Bearer sk-lim-b-0123456789"}


def config(sim, key_a, key_b="", workers=2, extra="", db=None):
    """A gateway with keys team-a and team-b; its own store (a budget's
    ledger lives there), never the default file shared by every test."""
    db = db or os.path.join(tempfile.mkdtemp(prefix="shade-bb-lim-"), "store.db")
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", f"  workers: {workers}", "  log_level: warn",
             "models:",
             "  - name: demo", "    price: { input: 1000000, output: 1000000 }",
             "    backends:", f"      - url: http://127.0.0.1:{sim}",
             "  - name: other", "    backends:", f"      - url: http://127.0.0.1:{sim}",
             "auth:", "  keys:",
             "    - name: team-a", "      key_env: SHADE_TEST_LIM_A"]
    lines += ["      " + l for l in key_a.strip().splitlines()]
    lines += ["    - name: team-b", "      key_env: SHADE_TEST_LIM_B"]
    lines += ["      " + l for l in key_b.strip().splitlines()] if key_b.strip() else []
    lines += ["  " + l for l in extra.strip().splitlines()] if extra.strip() else []
    lines += ["shadow_store:", f"  path: {db}"]
    return "\n".join(lines) + "\n"


def err(data):
    return json.loads(data)["error"]


def reload(proc):
    """SIGHUP the master and wait until a new serving process took over."""
    old = proc.children()[0]
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.time() + 10 * harness.SLOW
    while time.time() < deadline and (not proc.children() or proc.children()[0] == old):
        time.sleep(0.05)
    assert proc.children() and proc.children()[0] != old, "the reload did not happen"


def test_rpm_429_headers_and_other_keys(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 5)
    gw = env.gateway(config(sim, "limits: { rpm: 5 }"))
    rem = []
    for _ in range(5):
        st, h, data = post(gw, chat(max_tokens=5), headers=A)
        assert st == 200, data
        assert h["x-ratelimit-limit-requests"] == "5"
        rem.append(int(h["x-ratelimit-remaining-requests"]))
        assert h["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in h  # no tpm limit on this key
    assert rem == [4, 3, 2, 1, 0], rem
    st, h, data = post(gw, chat(max_tokens=5), headers=A)
    e = err(data)
    assert st == 429 and e["code"] == "rate_limit_exceeded" and e["type"] == "requests", data
    assert "team-a" in e["message"] and "RPM" in e["message"], e
    assert 1 <= int(h["retry-after"]) <= 13, h  # one request refills in 12 s
    assert h["x-ratelimit-remaining-requests"] == "0"
    # another key is not affected, nor is a key without limits
    st, h, _ = post(gw, chat(max_tokens=5), headers=B)
    assert st == 200 and "x-ratelimit-limit-requests" not in h
    m = metrics(gw)
    assert m['shade_limit_refused_total{limit="rpm"}'] == 1
    # the secret never appears in what a client or an operator sees
    assert b"sk-lim" not in data
    assert "sk-lim" not in request(gw, "GET", "/metrics")[2].decode()


def test_tpm_reserve_then_settle(env):
    # each request reserves prompt/4 + max_tokens (100) but uses ~5 + 5:
    # settling gives the unused part back, so far more than 1000/110 pass
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 5)
    gw = env.gateway(config(sim, "limits: { tpm: 1000 }"))
    ok = 0
    for i in range(40):
        st, h, data = post(gw, chat(max_tokens=100, stream=(i % 2 == 0),
                                    stream_options={"include_usage": True}) if i % 2 == 0
                           else chat(max_tokens=100), headers=A)
        assert st == 200, data
        ok += 1
        assert h["x-ratelimit-limit-tokens"] == "1000"
    assert ok == 40
    rem = int(post(gw, chat(max_tokens=100), headers=A)[1]["x-ratelimit-remaining-tokens"])
    # 41 requests, each ~10 tokens used: about 590 left after this one's reservation of ~110
    assert 450 <= rem <= 700, rem
    # a request that can never fit the limit: 429, and no Retry-After to wait for
    st, h, data = post(gw, chat(max_tokens=5000), headers=A)
    e = err(data)
    assert st == 429 and e["type"] == "tokens" and "too large" in e["message"], data
    assert "retry-after" not in h
    # without max_tokens the reservation is auth.default_max_tokens (1024): above the limit
    st, _, data = post(gw, chat(), headers=A)
    assert st == 429 and "too large" in err(data)["message"], data
    assert metrics(gw)['shade_limit_refused_total{limit="too_large"}'] == 2


def test_concurrency_and_model_limits(env):
    sim = env.sim("--ttft-ms", 400, "--tps", 0, "--max-tokens", 3)
    gw = env.gateway(config(sim, "limits: { concurrency: 2 }",
                            "model_limits:\n  - { model: other, rpm: 2 }"))
    res = []

    def one():
        res.append(post(gw, chat(max_tokens=3), headers=A))

    ts = [threading.Thread(target=one) for _ in range(2)]
    for t in ts:
        t.start()
    time.sleep(0.15)
    st, h, data = post(gw, chat(max_tokens=3), headers=A)
    assert st == 429 and "in flight" in err(data)["message"], data
    for t in ts:
        t.join()
    assert [r[0] for r in res] == [200, 200]
    assert post(gw, chat(max_tokens=3), headers=A)[0] == 200  # released at finish
    # team-b: 2 a minute on `other`, none on demo
    for _ in range(2):
        assert post(gw, chat(model="other", max_tokens=3), headers=B)[0] == 200
    st, _, data = post(gw, chat(model="other", max_tokens=3), headers=B)
    assert st == 429, data
    assert post(gw, chat(max_tokens=3), headers=B)[0] == 200


def test_budget_hard_and_soft(env):
    # prices of $1 per token: a request costs its tokens in dollars
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 4)
    gw = env.gateway(config(sim, "budget: { usd: 60, soft_usd: 20, period: day }"))
    codes = []
    for _ in range(12):
        st, _, data = post(gw, chat("hi", max_tokens=4), headers=A)
        codes.append(st)
        if st != 200:
            e = err(data)
            assert st == 429 and e["type"] == "insufficient_quota" and e["code"] == "insufficient_quota", data
            assert "$60.00" in e["message"] and "day" in e["message"], e
    n = codes.count(200)
    # each costs ~ (prompt/4 + 4) dollars; the reservation of the last one
    # admitted must fit what is left, so spend stays within the budget
    assert 3 <= n < 12 and codes == [200] * n + [429] * (12 - n), codes
    m = metrics(gw)
    assert m["shade_budget_soft_alerts_total"] == 1
    assert "has spent" in env.last_gateway.output()


def test_limits_survive_reload(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 3)
    gw = env.gateway(config(sim, "limits: { rpm: 4 }"))
    proc = env.last_gateway
    for _ in range(4):
        assert post(gw, chat(max_tokens=3), headers=A)[0] == 200
    reload(proc)
    st, h, data = post(gw, chat(max_tokens=3), headers=A)
    assert st == 429 and h["x-ratelimit-remaining-requests"] == "0", (st, data)


def test_lockout_survives_reload(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(config(sim, "limits: { rpm: 100 }", extra="lockout_failures: 3\nlockout_ban: 30s"))
    proc = env.last_gateway
    for _ in range(3):
        assert post(gw, chat(), headers={"authorization": "Bearer nope"})[0] == 401
    assert post(gw, chat(max_tokens=3), headers=A)[0] == 429  # banned: even a good key
    reload(proc)
    st, h, data = post(gw, chat(max_tokens=3), headers=A)
    assert st == 429 and err(data)["code"] == "too_many_auth_failures" and int(h["retry-after"]) > 20, data


def test_tpm_exact_under_concurrency_and_reloads(env):
    """Many concurrent streaming clients on one key, 2 workers, reloads in
    the middle: the tokens admitted never exceed the limit's capacity plus
    its refill over the run plus one reservation."""
    sim = env.sim("--ttft-ms", 20, "--tps", 400, "--max-tokens", 40, "--workers", 2)
    tpm = 3000
    gw = env.gateway(config(sim, f"limits: {{ tpm: {tpm} }}"))
    proc = env.last_gateway
    used, codes, errors = [], [], []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                st, _, body = post(gw, chat("tell me", max_tokens=40, stream=True,
                                            stream_options={"include_usage": True}), headers=A)
            except OSError as e:
                with lock:
                    errors.append(repr(e))
                continue
            with lock:
                codes.append(st)
            if st == 200:
                u = [json.loads(e)["usage"] for e in harness.sse_events(body)
                     if e != "[DONE]" and json.loads(e).get("usage")]
                with lock:
                    used.append(u[-1]["total_tokens"])
            else:
                time.sleep(0.05)

    t0 = time.time()
    ts = [threading.Thread(target=client) for _ in range(60)]
    for t in ts:
        t.start()
    for _ in range(2):
        time.sleep(1.0)
        reload(proc)
    time.sleep(1.0)
    stop.set()
    for t in ts:
        t.join()
    elapsed = time.time() - t0
    assert not errors, errors[:3]
    admitted = sum(used)
    reservation = 40 + 20  # max_tokens + the prompt estimate, generously
    bound = tpm + tpm * elapsed / 60 + reservation
    assert codes.count(200) > 20 and codes.count(429) > 20, {c: codes.count(c) for c in set(codes)}
    assert admitted <= bound, (admitted, bound, elapsed)
    # and the limit was reached, not merely undershot
    assert admitted >= 0.8 * tpm, (admitted, bound)


def test_budget_exact_under_concurrency(env):
    """40 clients at once on a key with a $300 budget, each request costing
    ~$10 at $1 per token: what is spent stays within the budget plus one
    reservation, however the requests interleave on 2 workers."""
    sim = env.sim("--ttft-ms", 30, "--tps", 0, "--max-tokens", 8, "--workers", 2)
    gw = env.gateway(config(sim, "budget: { usd: 300, period: day }"))
    spent, codes = [], []
    lock = threading.Lock()

    def client():
        for _ in range(3):
            st, _, body = post(gw, chat("hi", max_tokens=8), headers=A)
            with lock:
                codes.append(st)
                if st == 200:
                    spent.append(json.loads(body)["usage"]["total_tokens"])  # $1 a token

    ts = [threading.Thread(target=client) for _ in range(40)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    reservation = 8 + 12  # max_tokens + the prompt estimate, generously
    assert codes.count(429) > 0, codes
    assert sum(spent) <= 300 + reservation, (sum(spent), codes.count(200))
    # and the budget was really reached (reservations of requests still in
    # flight may refuse some that would have fit once those settled)
    assert sum(spent) >= 150, sum(spent)


def test_budget_survives_a_master_restart(env):
    """The shared state goes with the master, but a budget's spend is in the
    ledger: a new master starts the period's bucket from what was spent."""
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 4)
    db = os.path.join(env.tmp, "store.db")
    cfg = config(sim, "budget: { usd: 40, period: month }", db=db)
    gw = env.gateway(cfg)
    codes = [post(gw, chat("hi", max_tokens=4), headers=A)[0] for _ in range(8)]
    assert 200 in codes and codes[-1] == 429, codes
    assert env.last_gateway.stop() == 0  # the ledger's last rows are written at stop
    gw2 = env.gateway(cfg)
    st, _, data = post(gw2, chat("hi", max_tokens=4), headers=A)
    assert st == 429 and err(data)["type"] == "insufficient_quota", data
    # a key without a budget is not affected
    assert post(gw2, chat("hi", max_tokens=4), headers=B)[0] == 200


def test_spans_name_the_key_never_the_secret(env):
    from test_telemetry import OtlpReceiver, attrs
    rx = OtlpReceiver()
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 3)
    log = os.path.join(env.tmp, "access.log")
    cfg = config(sim, "limits: { rpm: 2 }") + f"""tracing:
  endpoint: http://127.0.0.1:{rx.port}/v1/traces
  interval: 100ms
access_log:
  path: {log}
  flush: 100ms
"""
    gw = env.gateway(cfg)
    codes = [post(gw, chat(max_tokens=3), headers=A)[0] for _ in range(3)]
    assert codes == [200, 200, 429], codes
    assert post(gw, chat(), headers={"authorization": "Bearer sk-lim-a-wrong"})[0] == 401
    spans = rx.wait(lambda x: x["kind"] == 2, n=4)
    keyed = [attrs(s).get("shade.key") for s in spans]
    assert keyed.count("team-a") == 3, keyed
    time.sleep(0.3)
    rx.close()
    everything = json.dumps(rx.spans) + open(log).read() + env.last_gateway.output() + \
        request(gw, "GET", "/metrics")[2].decode()
    assert "sk-lim" not in everything


def test_shadow_selects_by_key_name(env):
    """`select: key` names keys (no secret in the config): only team-a's
    requests are mirrored."""
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 3)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 3, "--seed", 9)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = config(sim, "", db=db) + f"""shadows:
  - name: probe
    model: demo
    select: key
    keys: [team-a]
    aa_percent: 0
    backends:
      - url: http://127.0.0.1:{cand}
"""
    gw = env.gateway(cfg)
    for _ in range(3):
        assert post(gw, chat(max_tokens=3), headers=A)[0] == 200
        assert post(gw, chat(max_tokens=3), headers=B)[0] == 200
    deadline = time.time() + 5
    while time.time() < deadline and metrics(gw).get('shade_shadow_mirrored_total{shadow="probe"}', 0) < 3:
        time.sleep(0.05)
    m = metrics(gw)
    assert m['shade_shadow_mirrored_total{shadow="probe"}'] == 3, m
    assert m['shade_shadow_skipped_total{shadow="probe",reason="not_selected"}'] == 3, \
        {k: v for k, v in m.items() if "skipped" in k}


def test_pending_reservations_as_a_remote_backend(env):
    """SHADE_STATE_DEFER_MS makes every reservation answer later, on the
    worker loop, as a remote (Redis) backend will: the limit phase waits
    (PL_WAIT), and a client that leaves while its reservation is pending
    gets all of it given back."""
    sim = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 3)
    e = dict(os.environ, SHADE_STATE_DEFER_MS="300")
    gw = env.gateway(config(sim, "limits: { rpm: 3, concurrency: 1 }"), env=e)
    # a client gone while its reservation is pending: nothing is kept
    for _ in range(2):
        s = harness.socket.create_connection(("127.0.0.1", gw))
        body = json.dumps(chat(max_tokens=3)).encode()
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer sk-lim-a-0123456789\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n" + body)
        time.sleep(0.05)
        s.close()
    time.sleep(0.5)
    t0 = time.time()
    rem = []
    for _ in range(3):
        st, h, data = post(gw, chat(max_tokens=3), headers=A)
        assert st == 200, data
        rem.append(h["x-ratelimit-remaining-requests"])
    assert time.time() - t0 >= 0.85  # three waits of 300 ms: the pending path was taken
    assert rem == ["2", "1", "0"], rem  # the two abandoned requests gave their rpm back
    st, h, data = post(gw, chat(max_tokens=3), headers=A)
    assert st == 429 and err(data)["type"] == "requests", data
