"""Rollouts: a public model's traffic moved to a candidate step by step by
the controller's anytime-valid tests — promotion of a healthy candidate,
rollback of a failing or slow one, sticky arms, the admin API, the state
kept across a restart and every decision replayable from the store —
against the real binary and simulated model servers."""
import json
import signal
import os
import subprocess
import threading
import time

import harness
from harness import SLOW, chat, metrics, post, request


def rollout_config(base, cand, db, extra="", steps=None, top_extra=""):
    """demo over the `base` simulator; candidate demo-v2 over `cand`; one
    rollout moving demo to demo-v2 with short steps and checks."""
    steps = steps or [(10, "300ms", 15), (30, "300ms", 15), (60, "300ms", 15)]
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 2", "  log_level: warn",
             "models:",
             "  - name: demo", "    backends:", f"      - url: http://127.0.0.1:{base}", "        name: b0",
             "  - name: demo-v2", "    backends:", f"      - url: http://127.0.0.1:{cand}", "        name: c0",
             "rollouts:", "  - name: v2", "    model: demo", "    candidate: demo-v2",
             "    check_interval: 100ms", "    variant_header: true", "    steps:"]
    lines += [f"      - {{ percent: {p}, min_duration: {d}, min_requests: {n} }}" for p, d, n in steps]
    lines += ["    " + l for l in extra.strip().splitlines()] if extra.strip() else []
    lines += ["shadow_store:", f"  path: {db}"]
    lines += top_extra.strip().splitlines() if top_extra.strip() else []
    return "\n".join(lines) + "\n"


def rollout(port, name="v2"):
    st, _, body = request(port, "GET", f"/admin/rollouts/{name}")
    assert st == 200, body
    return json.loads(body)


def ask(port, user, stream=False):
    body = chat(f"hello from {user}", stream=stream)
    body["user"] = user
    st, headers, data = post(port, body)
    return st, headers.get("x-shade-variant"), data


class Load:
    """Requests from 400 users in a background thread until stopped."""

    def __init__(self, port):
        self.port, self.stop, self.n = port, False, 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        deadline = time.time() + 60 * SLOW
        while not self.stop and time.time() < deadline:
            try:
                ask(self.port, f"u{i % 400}")
            except Exception:
                pass
            i += 1
            self.n = i

    def end(self):
        self.stop = True
        self.t.join(10)


def wait_phase(port, phases, timeout=30):
    deadline = time.time() + timeout * SLOW
    r = None
    while time.time() < deadline:
        r = rollout(port)
        if r["phase"] in phases:
            return r
        time.sleep(0.1)
    raise AssertionError(f"rollout did not reach {phases}: {r}")


def replay(db):
    p = subprocess.run([harness.BIN, "rollout", "replay", "--db", db], capture_output=True, text=True,
                       timeout=60 * SLOW)
    return p.returncode, p.stdout + p.stderr


def test_healthy_candidate_promoted_through_every_step(env):
    base = env.sim("--ttft-ms", 5, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 5, "--tps", 0, "--model", "demo-v2")
    db = os.path.join(env.tmp, "store.db")
    # promotion needs success shown above 0.5 and latency within 1.5x at
    # alpha 0.05: a few dozen good canary requests
    gw = env.gateway(rollout_config(base, cand, db, "alpha_promote: 0.05\nsuccess_min: 0.5\nlatency_ratio_max: 3"))
    r = rollout(gw)
    assert r["phase"] == "canary" and r["step"] == 1 and r["share"] == 10, r
    load = Load(gw)
    r = wait_phase(gw, ("promoted", "rolled_back", "frozen"))
    load.end()
    assert r["phase"] == "promoted", r
    assert r["requests"]["canary"] > 0 and r["requests"]["baseline"] > 0
    # promoted: every unit on the candidate, which is named as itself upstream
    st, variant, data = ask(gw, "anyone")
    assert st == 200 and variant == "canary", (st, variant)
    assert json.loads(data)["model"] == "demo-v2"
    m = metrics(gw)
    assert m['shade_rollout_share{rollout="v2"}'] == 100
    assert m['shade_rollout_state{rollout="v2",state="promoted"}'] == 1
    assert m['shade_rollout_decisions_total{rollout="v2",action="advance"}'] == 2
    assert m['shade_rollout_decisions_total{rollout="v2",action="promote"}'] == 1
    env.last_gateway.stop()
    # the decisions recompute the same from the stored checks
    rc, out = replay(db)
    assert rc == 0 and "every decision recomputed the same" in out, out
    p = subprocess.run([harness.BIN, "rollout", "status", "--db", db], capture_output=True, text=True)
    assert p.returncode == 0 and "v2: promoted, step 3" in p.stdout, p.stdout
    assert p.stdout.count(" advance -> canary") == 2 and " promote -> promoted" in p.stdout, p.stdout


def test_failing_candidate_rolled_back_before_25_percent(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 0.3)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, steps=[(10, "20s", 500), (25, "20s", 500), (50, "20s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back",))
    load.end()
    assert r["step"] == 1 and "fails more than the baseline" in r["reason"], r
    # rolled back: every unit back on the baseline, at once
    for i in range(20):
        st, variant, _ = ask(gw, f"u{i}")
        assert st == 200 and variant == "baseline"
    assert metrics(gw)['shade_rollout_share{rollout="v2"}'] == 0
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0, out


def test_slow_candidate_rolled_back(env):
    base = env.sim("--ttft-ms", 5, "--tps", 0)
    cand = env.sim("--ttft-ms", 40, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, steps=[(20, "20s", 500), (40, "20s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back",))
    load.end()
    assert r["step"] == 1 and "latency" in r["reason"], r
    assert r["pairs"]["latency_slower"] > r["pairs"]["latency_not_slower"], r


def test_on_failure_pause_holds_the_share(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 0.5)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, "on_failure: pause", steps=[(20, "20s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("frozen",))
    load.end()
    assert r["share"] == 20 and "on_failure: pause" in r["reason"], r
    # a person decides: roll back
    st, _, body = request(gw, "POST", "/admin/rollouts/v2/rollback")
    assert st == 202, body
    r = wait_phase(gw, ("rolled_back",))
    assert r["share"] == 0 and "admin API" in r["reason"], r


def test_arms_are_sticky_and_the_split_holds(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    # long steps: the share stays at 30 % while we look
    gw = env.gateway(rollout_config(base, cand, db, steps=[(30, "1h", 100000)]))
    arms = {}
    for i in range(300):
        st, variant, _ = ask(gw, f"user-{i}")
        assert st == 200
        arms[i] = variant
    share = sum(v == "canary" for v in arms.values()) / 300
    assert 0.2 < share < 0.4, share  # 30 % ± 4 standard deviations
    for i in range(0, 300, 7):  # the same user, the same arm, streamed or not
        assert ask(gw, f"user-{i}", stream=bool(i % 2))[1] == arms[i]
    # /metrics: the canary's requests under the public model, variant
    # canary, with the candidate's backend — what the canary alert rule
    # (deploy/prometheus/alerts.yml) compares with the primary's
    m = metrics(gw)
    can = sum(v for k, v in m.items() if k.startswith('shade_requests_total{model="demo",variant="canary",backend="c0"'))
    prim = sum(v for k, v in m.items() if k.startswith('shade_requests_total{model="demo",variant="primary",backend="b0"'))
    assert can == sum(1 for v in arms.values() if v == "canary") + sum(
        1 for i in range(0, 300, 7) if arms[i] == "canary"), (can, prim)
    assert can + prim >= 300 + 43
    assert any(k.startswith('shade_request_duration_seconds_bucket{model="demo",variant="canary"') for k in m)
    # without a unit (no `user`): counted, assigned per request
    st, _, _ = post(gw, chat("no user"))
    assert st == 200
    r = rollout(gw)
    assert r["requests"]["without_unit"] >= 1 and r["phase"] == "canary"


def test_admin_api_and_restart_keeps_state(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    os.environ["SHADE_TEST_ADMIN_KEY"] = "k3y"
    cfg = rollout_config(base, cand, db, steps=[(10, "200ms", 5), (50, "1h", 100000)],
                         top_extra="admin:\n  key_env: SHADE_TEST_ADMIN_KEY")
    gw = env.gateway(cfg)
    key = {"x-shade-admin-key": "k3y"}
    assert request(gw, "GET", "/admin/rollouts")[0] == 401
    st, _, body = request(gw, "GET", "/admin/rollouts", headers=key)
    assert st == 200 and [x["name"] for x in json.loads(body)["rollouts"]] == ["v2"]
    assert request(gw, "GET", "/admin/rollouts/nope", headers=key)[0] == 404
    assert request(gw, "GET", "/admin/rollouts/v2/pause", headers=key)[0] == 405
    for i in range(40):
        ask(gw, f"u{i}")
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline:
        st, _, body = request(gw, "GET", "/admin/rollouts/v2", headers=key)
        if json.loads(body)["step"] == 2:
            break
        time.sleep(0.1)
    assert json.loads(body)["step"] == 2 and json.loads(body)["share"] == 50, body
    assert request(gw, "POST", "/admin/rollouts/v2/resume", headers=key)[0] == 409  # not frozen
    assert request(gw, "POST", "/admin/rollouts/v2/pause", headers=key)[0] == 202
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline:
        r = json.loads(request(gw, "GET", "/admin/rollouts/v2", headers=key)[2])
        if r["phase"] == "frozen":
            break
        time.sleep(0.05)
    assert r["phase"] == "frozen" and r["share"] == 50, r
    # a restart resumes where it was
    env.last_gateway.stop()
    gw = env.gateway(cfg)
    r = json.loads(request(gw, "GET", "/admin/rollouts/v2", headers=key)[2])
    assert (r["phase"], r["step"], r["share"]) == ("frozen", 2, 50), r
    assert request(gw, "POST", "/admin/rollouts/v2/resume", headers=key)[0] == 202
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline:
        r = json.loads(request(gw, "GET", "/admin/rollouts/v2", headers=key)[2])
        if r["phase"] == "canary":
            break
        time.sleep(0.05)
    assert r["phase"] == "canary" and r["step"] == 2, r
    assert request(gw, "POST", "/admin/rollouts/v2/promote", headers=key)[0] == 202
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline and r["phase"] != "promoted":
        r = json.loads(request(gw, "GET", "/admin/rollouts/v2", headers=key)[2])
        time.sleep(0.05)
    assert r["phase"] == "promoted" and r["share"] == 100, r
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0, out
    # a changed config is a new rollout: it starts again at step 1
    gw = env.gateway(cfg.replace("percent: 50", "percent: 40"))
    r = json.loads(request(gw, "GET", "/admin/rollouts/v2", headers=key)[2])
    assert (r["phase"], r["step"], r["share"]) == ("canary", 1, 10), r


def test_config_errors(env):
    bad = [
        ("candidate: nope", 'no candidate model named "nope"'),
        ("candidate: demo", "the candidate is the model itself"),
        ("unit: header", 'unit: header needs "unit_header"'),
        ("alpha: 0.9", "alpha must be in (0, 0.5]"),
    ]
    for repl, want in bad:
        cfg = rollout_config(1, 2, "/tmp/x.db").replace("candidate: demo-v2", repl, 1)
        if "unit" in repl:
            cfg = rollout_config(1, 2, "/tmp/x.db", repl)
        if "alpha" in repl:
            cfg = rollout_config(1, 2, "/tmp/x.db", repl)
        path = os.path.join(env.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(cfg.replace("{PORT}", "1"))
        p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr, (repl, p.stderr)
    cfg = rollout_config(1, 2, "/tmp/x.db", steps=[(30, "1s", 1), (20, "1s", 1)])
    path = os.path.join(env.tmp, "bad.yaml")
    with open(path, "w") as f:
        f.write(cfg.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode != 0 and "step 2: percent must be above the previous step's (30)" in p.stderr, p.stderr


def test_rollback_during_open_streams_cuts_none(env):
    """Rolling back moves new requests at once; the streams already open on
    the canary finish there, whole."""
    # both arms stream for about two seconds: no latency alarm, and the
    # rollback below lands while the canary's streams are open
    base = env.sim("--ttft-ms", 20, "--tps", 40, "--max-tokens", 80)
    cand = env.sim("--ttft-ms", 20, "--tps", 40, "--max-tokens", 80)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, steps=[(50, "1h", 100000)]))
    results = []

    def one(i):
        st, variant, data = ask(gw, f"s{i}", stream=True)
        results.append((st, variant, data))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the canary's streams are open
    st, _, body = request(gw, "POST", "/admin/rollouts/v2/rollback")
    assert st == 202, body
    assert len(results) < 60  # some streams are still open
    r = wait_phase(gw, ("rolled_back",))
    assert r["share"] == 0
    after = {}

    def later(i):
        after[i] = ask(gw, f"s{i}")[1]

    late = [threading.Thread(target=later, args=(i,)) for i in range(20)]
    for t in late:
        t.start()
    for t in late + threads:
        t.join(30)
    assert list(after.values()) == ["baseline"] * 20, after
    canary = [x for x in results if x[1] == "canary"]
    assert len(results) == 60 and len(canary) >= 10, (len(results), len(canary))
    for st, variant, data in results:
        evs = harness.sse_events(data)
        assert st == 200 and evs and evs[-1] == "[DONE]", (st, variant, evs[-2:])


def test_state_survives_reload(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    cfg = rollout_config(base, cand, db, steps=[(10, "200ms", 5), (50, "1h", 100000)])
    gw = env.gateway(cfg)
    proc = env.last_gateway
    for i in range(40):
        ask(gw, f"u{i}")
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline and rollout(gw)["step"] != 2:
        time.sleep(0.1)
    before = rollout(gw)
    assert before["step"] == 2, before
    old = proc.children()[0]
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline and (not proc.children() or old in proc.children()):
        time.sleep(0.02)
    assert old not in proc.children()
    r = rollout(gw)
    assert (r["phase"], r["step"], r["share"]) == ("canary", 2, 50), r
    assert r["requests"]["canary"] >= before["requests"]["canary"] - 5  # carried over, not reset


def shadow_stage_config(base, cand, db, extra=""):
    """The rollout starts as a shadow of demo to demo-v2 (A/A legs for the
    noise floor, a fast analysis), then moves to the canary steps."""
    cfg = rollout_config(base, cand, db, "shadow: probe\n" + extra,
                         steps=[(10, "200ms", 5), (30, "200ms", 5)])
    shadow = ("shadows:\n  - name: probe\n    model: demo\n    target: demo-v2\n    aa_percent: 50\n"
              "    analysis: { interval: 200ms }\n    recommend: { min_pairs: 20 }\n")
    return cfg.replace("rollouts:\n", shadow + "rollouts:\n")


def test_shadow_stage_then_canary(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo")  # the same answers: ready in shadow
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(shadow_stage_config(base, cand, db))
    r = rollout(gw)
    assert (r["phase"], r["share"]) == ("shadow", 0), r
    for i in range(10):  # in the shadow stage every user is on the baseline
        assert ask(gw, f"early{i}")[1] == "baseline"
    load = Load(gw)
    r = wait_phase(gw, ("canary", "rolled_back"), timeout=60)
    load.end()
    assert r["phase"] == "canary" and r["step"] == 1 and "ready_for_canary" in r["reason"], r
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0, out


def test_shadow_stage_failing_candidate_never_exposed(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 1)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(shadow_stage_config(base, cand, db))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back", "canary"), timeout=60)
    load.end()
    assert r["phase"] == "rolled_back" and r["requests"]["canary"] == 0, r
    assert "never exposed" in r["reason"], r


class Hooks:
    """A webhook receiver and a confirm hook that says no `refuse` times."""

    def __init__(self, refuse):
        import http.server
        hooks = self
        self.events, self.confirms, self.refuse = [], [], refuse

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path == "/confirm":
                    hooks.confirms.append(body)
                    code = 503 if len(hooks.confirms) <= hooks.refuse else 200
                else:
                    hooks.events.append(body)
                    code = 204
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_webhook_and_confirm_hook(env):
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    hooks = Hooks(refuse=3)
    try:
        extra = (f"webhook: http://127.0.0.1:{hooks.port}/events\n"
                 f"confirm_url: http://127.0.0.1:{hooks.port}/confirm\n")
        gw = env.gateway(rollout_config(base, cand, db, extra, steps=[(10, "200ms", 5), (50, "1h", 100000)]))
        for i in range(40):
            ask(gw, f"u{i}")
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline and rollout(gw)["step"] != 2:
            time.sleep(0.1)
        r = rollout(gw)
        # the first three asks were refused: the step was held, then taken
        assert r["step"] == 2 and len(hooks.confirms) == 4, (r, len(hooks.confirms))
        assert hooks.confirms[0]["action"] == "advance" and hooks.confirms[0]["share_to"] == 50
        # the event is posted after the step is taken: wait for it
        while time.time() < deadline and not hooks.events:
            time.sleep(0.05)
        time.sleep(0.2)  # and for any other (there must be none)
        acts = [e["action"] for e in hooks.events]
        assert acts == ["advance"], acts  # a held step is not an event
        assert hooks.events[0]["share_from"] == 10 and hooks.events[0]["requests"]["canary"] > 0
        # a rollback is never held by the confirm hook
        assert request(gw, "POST", "/admin/rollouts/v2/rollback")[0] == 202
        wait_phase(gw, ("rolled_back",))
        deadline = time.time() + 5 * SLOW
        while time.time() < deadline and len(hooks.events) < 2:
            time.sleep(0.05)
        assert [e["action"] for e in hooks.events] == ["advance", "manual_rollback"]
        env.last_gateway.stop()
        rc, out = replay(db)
        assert rc == 0, out
        p = subprocess.run([harness.BIN, "rollout", "status", "--db", db], capture_output=True, text=True)
        assert p.stdout.count(" held -> ") == 3, p.stdout
    finally:
        hooks.close()


def test_shadow_stage_garbled_answers_never_exposed(env):
    """A candidate that answers, fast and without errors, but garbles half
    its words is stopped by the shadow stage's quality comparison against
    the A/A noise floor."""
    base = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo", "--quality", "0.5")
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(shadow_stage_config(base, cand, db))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back", "canary"), timeout=60)
    load.end()
    assert r["phase"] == "rolled_back" and r["requests"]["canary"] == 0, r
    assert "investigate (rule quality_regression)" in r["reason"], r


def test_costlier_candidate_rolled_back(env):
    """Same price per token, but the candidate says ten times more: it costs
    more per request, and the cost gate rolls it back."""
    def answer(tokens):
        return harness.json_response({"id": "x", "object": "chat.completion", "model": "m",
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                   "finish_reason": "stop"}],
                                      "usage": {"prompt_tokens": 10, "completion_tokens": tokens,
                                                "total_tokens": 10 + tokens}})
    base = harness.FakeUpstream(lambda req: answer(20))
    cand = harness.FakeUpstream(lambda req: answer(200))
    db = os.path.join(env.tmp, "store.db")
    cfg = rollout_config(base.port, cand.port, db, steps=[(20, "20s", 500)])
    cfg = cfg.replace("        name: b0", "        name: b0\n    price: { input: 1.0, output: 2.0 }")
    cfg = cfg.replace("        name: c0", "        name: c0\n    price: { input: 1.0, output: 2.0 }")
    gw = env.gateway(cfg)
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back",))
    load.end()
    assert "costs more than 1.25x" in r["reason"], r
    assert r["pairs"]["cost_higher"] > 0 and r["pairs"]["cost_not_higher"] == 0, r


def test_refusing_candidate_rolled_back(env):
    """The candidate answers, fast and without errors, but refuses 40 % of
    the time (the baseline never does): the refusal gate rolls it back, and
    the decision is replayed the same from the store."""
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--refuse-rate", 0.4)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, steps=[(20, "20s", 500), (40, "20s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back",))
    load.end()
    assert r["step"] == 1 and "refuses more than the baseline" in r["reason"], r
    assert r["refusals"]["tested"] and r["refusals"]["canary"] > 0 and r["refusals"]["baseline"] == 0, r
    assert r["evidence"]["refusals"]["e_value_max"] >= r["evidence"]["refusals"]["rollback_at"], r
    assert r["requests"]["canary_failed"] == 0, r
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0 and "every decision recomputed the same" in out, out


def test_refusal_gate_off_lets_refusals_through(env):
    """refusals: false: the same candidate is not rolled back for refusing
    (the test above can fail: it is the gate that catches it)."""
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--refuse-rate", 0.4)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, "refusals: false\nalpha_promote: 0.05\nsuccess_min: 0.5\n"
                                    "latency_ratio_max: 3", steps=[(20, "300ms", 40)]))
    load = Load(gw)
    r = wait_phase(gw, ("promoted", "rolled_back", "frozen"))
    load.end()
    assert r["phase"] == "promoted", r
    assert not r["refusals"]["tested"] and not r["evidence"]["refusals"]["tested"], r


def test_garbled_candidate_rolled_back_by_the_quality_gate(env):
    """No shadow stage: the candidate answers fast and without errors but
    garbles half its words.  A sample of canary requests is also sent twice
    to the baseline; the canary's answers agree with the baseline's much
    less than the baseline's own do, and the quality gate rolls it back
    during the canary.  The pairs are in the store."""
    base = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo", "--quality", "0.5")
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, "quality: { sample_percent: 50, deadline: 5s }",
                                    steps=[(20, "20s", 500), (40, "20s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back",))
    load.end()
    assert r["step"] == 1 and "answers are worse than the baseline's" in r["reason"], r
    q = r["quality"]
    assert q["tested"] and q["worse"] > 0 and q["paired"] >= q["worse"], q
    assert r["evidence"]["quality"]["tested"], r
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0 and "every decision recomputed the same" in out, out
    import sqlite3
    con = sqlite3.connect(db)
    rows = con.execute("SELECT d, worse, canary, baseline, noise, scores FROM rollout_pairs WHERE rollout = 'v2'").fetchall()
    con.close()
    assert len(rows) >= q["worse"], (len(rows), q)
    d, worse, canary, baseline, noise, scores = rows[0]
    assert worse == 1 and d < -0.1 and baseline == noise and canary != baseline, rows[0]
    assert "edit_sim" in json.loads(scores), scores


def test_quality_gate_equal_candidate_promoted(env):
    """The same candidate as the baseline, with the quality gate on: its
    pairs are never worse, and it is promoted.  (20 ms to the first token
    on both arms: a sampled canary request starts its baseline legs on its
    own worker, and with sub-millisecond answers under ASan and a busy
    machine that showed as "slower than 1.2x" to the latency family.)"""
    base = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo")
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, "quality: { sample_percent: 50, deadline: 5s }\n"
                                    "alpha_promote: 0.05\nsuccess_min: 0.5\nlatency_ratio_max: 3",
                                    steps=[(20, "300ms", 20), (50, "300ms", 20)]))
    load = Load(gw)
    r = wait_phase(gw, ("promoted", "rolled_back", "frozen"))
    load.end()
    assert r["phase"] == "promoted", r
    assert r["quality"]["paired"] > 0 and r["quality"]["worse"] == 0, r["quality"]


def test_quality_gate_dead_baseline_leg_dropped_not_waited_for(env):
    """The baseline's legs of a quality sample hang: the client's canary
    answer is not delayed, the legs are cut at the deadline and the sample
    is dropped and counted — never a pair."""
    base = env.sim("--ttft-ms", 0, "--tps", 0, "--hang-rate", 1)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    # every unit on the canary (a 99 % step), every canary request sampled
    gw = env.gateway(rollout_config(base, cand, db, "quality: { sample_percent: 100, deadline: 300ms, "
                                    "max_concurrent: 4 }", steps=[(99, "60s", 100000)]))
    t0 = time.time()
    n = 0
    for i in range(40):
        st, variant, _ = ask(gw, f"user{i}")
        if variant == "canary":
            assert st == 200
            n += 1
    took = time.time() - t0
    assert n >= 30 and took < 5 * SLOW, (n, took)
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline:
        q = rollout(gw)["quality"]
        if q["in_flight"] == 0 and q["dropped_baseline_failed"] > 0:
            break
        time.sleep(0.1)
    assert q["paired"] == 0 and q["dropped_baseline_failed"] + q["dropped_cap"] == q["sampled"], q
    assert q["dropped_cap"] > 0, q  # 4 legs in flight at most: two samples at a time


def test_spans_carry_the_arm(env):
    """The request span names the rollout and the arm that served it."""
    from test_telemetry import OtlpReceiver, attrs
    rx = OtlpReceiver()
    try:
        base = env.sim("--ttft-ms", 0, "--tps", 0)
        cand = env.sim("--ttft-ms", 0, "--tps", 0)
        db = os.path.join(env.tmp, "store.db")
        gw = env.gateway(rollout_config(base, cand, db, steps=[(50, "60s", 100000)],
                                        top_extra=f"tracing:\n  endpoint: http://127.0.0.1:{rx.port}/v1/traces\n"
                                                  "  interval: 100ms"))
        arms = {}
        for i in range(30):
            st, headers, _ = post(gw, dict(chat(f"hi {i}"), user=f"user{i}"))
            assert st == 200
            arms[headers["x-request-id"]] = headers["x-shade-variant"]
        assert set(arms.values()) == {"baseline", "canary"}, arms
        got = rx.wait(lambda s: attrs(s).get("shade.request_id") in arms, n=len(arms))
        for s in got:
            a = attrs(s)
            assert a["shade.rollout"] == "v2" and a["shade.variant"] == arms[a["shade.request_id"]], a
            assert a["gen_ai.request.model"] == ("demo-v2" if a["shade.variant"] == "canary" else "demo"), a
    finally:
        rx.close()


def test_quality_sample_of_a_client_that_left_is_dropped(env):
    """A sampled canary stream whose client leaves mid-answer: its baseline
    legs are cancelled and the sample is dropped (counted), never paired."""
    base = env.sim("--ttft-ms", 0, "--tps", 20)
    cand = env.sim("--ttft-ms", 0, "--tps", 20)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(rollout_config(base, cand, db, "quality: { sample_percent: 100, deadline: 20s }",
                                    steps=[(99, "60s", 100000)]))
    for i in range(40):  # a user on the canary arm
        st, variant, _ = ask(gw, f"user{i}")
        if variant == "canary":
            break
    assert variant == "canary"
    body = dict(chat(f"hello from user{i}", stream=True), user=f"user{i}")
    s = harness.open_request(gw, body)
    s.settimeout(5 * SLOW)
    assert b"data:" in s.recv(4096)
    s.close()
    deadline = time.time() + 10 * SLOW
    while time.time() < deadline:
        q = rollout(gw)["quality"]
        if q["dropped_canary_failed"] >= 1 and q["in_flight"] == 0 and q["paired"] + 1 == q["sampled"]:
            break
        time.sleep(0.1)
    assert q["dropped_canary_failed"] == 1 and q["in_flight"] == 0, q
    assert q["sampled"] == q["paired"] + 1, q  # the first request's sample (it finished) was paired


def judge_rollout_config(base, cand, judge, db, extra="", steps=None):
    """rollout_config with a judge model (`shade sim --judge` at `judge`)
    judging the quality gate's pairs, every one (judge_sample 100).  The
    comparators' margin is set out of reach, so only the judge can tell."""
    cfg = rollout_config(base, cand, db, "quality: { sample_percent: 50, deadline: 5s, judge: judge }\n"
                         "quality_margin: 0.99\n" + extra, steps=steps)
    return cfg.replace("rollouts:", "  - name: judge\n    backends:\n"
                       f"      - url: http://127.0.0.1:{judge}\n        name: j0\nrollouts:", 1)


def test_worse_candidate_rolled_back_by_the_judge(env):
    """The candidate keeps 30 % of its words (the rest fillers): the
    comparators' margin is out of reach, but the judge, asked about each
    sampled pair in both orders, prefers the baseline's answer every time;
    the judge family rolls it back.  Verdicts are in rollout_judgements,
    the prompt in rollout_pairs, and replay recomputes every decision.
    (20 ms to the first token on both arms, as below.)"""
    base = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo", "--quality", "0.3")
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(judge_rollout_config(base, cand, judge, db, steps=[(20, "30s", 500), (40, "30s", 500)]))
    load = Load(gw)
    r = wait_phase(gw, ("rolled_back", "promoted", "frozen"))
    load.end()
    assert r["phase"] == "rolled_back" and r["step"] == 1, r
    assert "the judge prefers the baseline's answers" in r["reason"], r
    j = r["judge"]
    assert j["tested"] and j["model"] == "judge" and j["lost"] >= 5 and j["won"] == 0, j
    assert r["evidence"]["judge"]["tested"] and r["evidence"]["judge"]["e_value_max"] >= 140, r["evidence"]
    assert r["quality"]["worse"] == 0, r["quality"]
    m = metrics(gw)
    assert m['shade_rollout_judgements_total{rollout="v2",outcome="loss"}'] >= j["lost"], m
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0 and "every decision recomputed the same" in out, out
    import sqlite3
    con = sqlite3.connect(db)
    rows = con.execute("SELECT j.order1, j.order2, j.outcome, j.judge, p.prompt FROM rollout_judgements j "
                       "JOIN rollout_pairs p ON p.id = j.pair_id WHERE j.rollout = 'v2'").fetchall()
    con.close()
    assert len(rows) >= j["lost"], (len(rows), j)
    o1, o2, outcome, model, prompt = rows[0]
    assert (o1, o2, outcome, model) == ("A", "B", "loss", "judge"), rows[0]
    assert "hello from u" in prompt and json.loads(prompt)[0]["role"] == "user", prompt


def test_judge_gate_equal_candidate_promoted(env):
    """The same answers on both arms: the judge says tie in both orders,
    which counts for neither side, and the candidate is promoted.  (20 ms
    to the first token on both arms: the judge's calls and the baseline
    legs load the gateway, and sub-millisecond answers would make that
    visible to the latency family.)"""
    base = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo")
    cand = env.sim("--ttft-ms", 20, "--tps", 0, "--model", "demo")
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(judge_rollout_config(base, cand, judge, db,
                                          "alpha_promote: 0.05\nsuccess_min: 0.5\nlatency_ratio_max: 3",
                                          steps=[(20, "2500ms", 20), (50, "2500ms", 20)]))
    load = Load(gw)
    r = wait_phase(gw, ("promoted", "rolled_back", "frozen"))
    load.end()
    assert r["phase"] == "promoted", r
    j = r["judge"]
    assert j["tested"] and j["lost"] == 0 and j["won"] == 0 and j["read"]["tie"] > 0, j
    env.last_gateway.stop()
    rc, out = replay(db)
    assert rc == 0 and "every decision recomputed the same" in out, out


def test_judge_config_errors(env):
    """quality.judge names a served model other than the rollout's two, and
    needs the quality gate; `shade check` says where."""
    bad = [
        ("quality: { sample_percent: 10, judge: nope }", 'no judge model named "nope"'),
        ("quality: { sample_percent: 10, judge: demo-v2 }", "the judge must be neither the model nor the candidate"),
        ("quality: { judge: judge }", "quality.judge needs quality.sample_percent above 0"),
        ("quality: { sample_percent: 10, judge: judge, judge_sample: 101 }", "judge_sample"),
    ]
    for extra, want in bad:
        cfg = rollout_config(1, 2, "/tmp/x.db", extra).replace(
            "rollouts:", "  - name: judge\n    backends:\n      - url: http://127.0.0.1:3\nrollouts:", 1)
        path = os.path.join(env.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(cfg.replace("{PORT}", "1"))
        p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr, (extra, p.stderr)
        assert "bad.yaml:" in p.stderr, p.stderr  # file:line:col


def test_store_from_before_the_judge_gets_the_prompt_column(env):
    """A store written before the judge gate has rollout_pairs without a
    prompt column: the gateway adds it (its rows keep a NULL prompt) and
    creates rollout_judgements.  A new run's judge leaves the pairs of
    the run before alone."""
    import sqlite3
    db = os.path.join(env.tmp, "old.db")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE rollout_pairs (id INTEGER PRIMARY KEY, rollout TEXT NOT NULL, ts REAL NOT NULL, "
                "request_id TEXT, d REAL NOT NULL, worse INTEGER NOT NULL, scores TEXT NOT NULL, "
                "canary TEXT, baseline TEXT, noise TEXT)")
    con.execute("INSERT INTO rollout_pairs (rollout, ts, d, worse, scores, canary, baseline, noise) "
                "VALUES ('v2', 1, 0, 0, '{}', 'a', 'b', 'b')")
    con.commit()
    con.close()
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(judge_rollout_config(base, cand, judge, db))
    assert rollout(gw)["judge"]["tested"]
    # the judge looks every second: the earlier run's pair is never judged
    time.sleep(2.5 * SLOW)
    env.last_gateway.stop()
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("PRAGMA table_info(rollout_pairs)")]
    rows = con.execute("SELECT canary, prompt FROM rollout_pairs").fetchall()
    jn = con.execute("SELECT count(*) FROM rollout_judgements").fetchone()[0]
    con.close()
    assert "prompt" in cols and rows == [("a", None)] and jn == 0, (cols, rows, jn)


def test_quality_samples_stored_redacted(env):
    """shadow_store.redact applies to a rollout's quality samples too: the
    prompt and the answers are written with every match replaced."""
    import sqlite3
    base = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    cfg = rollout_config(base, cand, db, "quality: { sample_percent: 100, deadline: 5s }",
                         steps=[(99, "60s", 100000)])
    gw = env.gateway(cfg.replace(f"  path: {db}\n", f"  path: {db}\n  redact: ['acct-[0-9]+']\n", 1))
    for i in range(8):
        body = chat(f"my account is acct-{1000 + i}, help", max_tokens=8)
        body["user"] = f"u{i}"
        assert post(gw, body)[0] == 200
    deadline = time.time() + 10 * harness.SLOW
    rows = []
    while time.time() < deadline and not rows:
        time.sleep(0.2)
        try:
            con = sqlite3.connect(db)
            rows = con.execute("SELECT prompt, canary, baseline, noise FROM rollout_pairs").fetchall()
            con.close()
        except sqlite3.OperationalError:
            pass
    assert rows, "no quality pair stored"
    for row in rows:
        text = " ".join(x or "" for x in row)
        assert "acct-" not in text and "[REDACTED]" in row[0], row
