"""A/B experiments: a public model's traffic split between arms at fixed
shares, sticky per user; user feedback attributed to the arm that served
the request; arms compared with the control by anytime-valid tests; the
counts kept across a restart and reported by `shade experiment report` —
against the real binary and simulated model servers."""
import json
import os
import subprocess
import threading
import time

import harness
from harness import SLOW, chat, metrics, post, request


def exp_config(ports, db, shares=None, extra="", top_extra=""):
    """demo over ports[0] (the control arm serves demo itself), and one more
    model and arm per further port: demo-b, demo-c ..."""
    names = ["control", "b", "c", "d"]
    shares = shares or [100 // len(ports)] * len(ports)
    shares[0] += 100 - sum(shares)
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 2", "  log_level: warn", "models:"]
    for i, p in enumerate(ports):
        model = "demo" if i == 0 else f"demo-{names[i]}"
        lines += [f"  - name: {model}", "    backends:", f"      - url: http://127.0.0.1:{p}",
                  f"        name: s{i}"]
    lines += ["experiments:", "  - name: ab", "    model: demo", "    variant_header: true",
              "    check_interval: 100ms", "    arms:"]
    for i in range(len(ports)):
        model = "demo" if i == 0 else f"demo-{names[i]}"
        lines.append(f"      - {{ name: {names[i]}, model: {model}, share: {shares[i]} }}")
    lines += ["    " + l for l in extra.strip().splitlines()] if extra.strip() else []
    lines += ["shadow_store:", f"  path: {db}"]
    lines += top_extra.strip().splitlines() if top_extra.strip() else []
    return "\n".join(lines) + "\n"


def ask(port, user, stream=False):
    body = chat(f"hello from {user}", stream=stream)
    body["user"] = user
    st, headers, data = post(port, body)
    return st, headers.get("x-shade-variant"), headers.get("x-request-id"), data


def feedback(port, body):
    st, _, data = post(port, body, path="/v1/feedback")
    return st, json.loads(data)


def experiment(port, name="ab"):
    st, _, body = request(port, "GET", f"/admin/experiments/{name}")
    assert st == 200, body
    return json.loads(body)


def arm(r, name):
    return next(a for a in r["arms"] if a["name"] == name)


def wait_stored(db, name, arm_name, counter, at_least):
    """The writer thread has put the count in the store."""
    import sqlite3
    deadline = time.time() + 10 * SLOW
    n = 0
    while time.time() < deadline:
        try:
            c = sqlite3.connect(db, timeout=5)
            row = c.execute("SELECT n FROM experiment_counts WHERE experiment=? AND arm=? AND counter=?",
                            (name, arm_name, counter)).fetchone()
            c.close()
            n = row[0] if row else 0
            if n >= at_least:
                return n
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{name}/{arm_name}/{counter}: {n} stored, wanted {at_least}")


def report(db, *args):
    p = subprocess.run([harness.BIN, "experiment", "report", "--db", db, *args], capture_output=True, text=True,
                       timeout=60 * SLOW)
    return p.returncode, p.stdout, p.stderr


def test_arms_split_by_share_and_sticky(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0, "--model", m) for m in ("demo", "demo-b", "demo-c")]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db, shares=[50, 30, 20]))
    arms, served = {}, {}
    for i in range(400):
        st, variant, rid, data = ask(gw, f"user-{i}")
        assert st == 200 and rid, (st, rid)
        arms[i] = variant
        served[variant] = served.get(variant, set()) | {json.loads(data)["model"]}
    n = {a: sum(v == a for v in arms.values()) for a in ("control", "b", "c")}
    # 50/30/20 % of 400 users, each within about 4 standard deviations
    assert 150 < n["control"] < 250 and 80 < n["b"] < 160 and 45 < n["c"] < 115, n
    # each arm is served by its own model (the control by the public one)
    assert served == {"control": {"demo"}, "b": {"demo-b"}, "c": {"demo-c"}}, served
    for i in range(0, 400, 9):  # the same user, the same arm, streamed or not
        assert ask(gw, f"user-{i}", stream=bool(i % 2))[1] == arms[i]
    r = experiment(gw)
    assert sum(a["counts"]["requests"] for a in r["arms"]) == 400 + len(range(0, 400, 9))
    assert r["arms"][0]["control"] and r["arms"][0]["name"] == "control"
    m = metrics(gw)
    assert m['shade_experiment_requests_total{experiment="ab",arm="b",outcome="ok"}'] == arm(r, "b")["counts"]["requests"]
    # a model with no experiment is untouched
    st, _, _ = request(gw, "GET", "/admin/experiments/nope")
    assert st == 404


def test_feedback_attributed_to_the_serving_arm(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0)]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db))
    served = []
    for i in range(30):
        st, variant, rid, _ = ask(gw, f"fb-{i}")
        assert st == 200
        served.append((variant, rid))
    for i, (variant, rid) in enumerate(served):
        body = {"request_id": rid, "thumbs": "up"} if i % 2 else {"request_id": rid, "score": 0.2}
        st, j = feedback(gw, body)
        assert st == 200 and j == {"ok": True, "experiment": "ab", "arm": variant,
                                   "value": "positive" if i % 2 else "negative"}, (st, j)
    r = experiment(gw)
    for name in ("control", "b"):
        want_pos = sum(1 for i, (v, _) in enumerate(served) if v == name and i % 2)
        want_neg = sum(1 for i, (v, _) in enumerate(served) if v == name and not i % 2)
        fb = arm(r, name)["feedback"]
        assert (fb["positive"], fb["negative"]) == (want_pos, want_neg), (name, fb)
    m = metrics(gw)
    assert m['shade_experiment_feedback_total{experiment="ab",arm="control",value="negative"}'] == \
        arm(r, "control")["feedback"]["negative"]
    # a second feedback for the same request: refused, not counted
    st, j = feedback(gw, {"request_id": served[0][1], "thumbs": "up"})
    assert st == 409 and j["error"]["code"] == "feedback_already_given", j
    assert [a["feedback"] for a in experiment(gw)["arms"]] == [a["feedback"] for a in r["arms"]]
    assert sum(a["feedback"]["positive"] + a["feedback"]["negative"] for a in experiment(gw)["arms"]) == 30
    # unknown ids, and bad bodies
    st, j = feedback(gw, {"request_id": "no-such-request", "thumbs": "up"})
    assert st == 404 and j["error"]["code"] == "feedback_request_not_found", j
    bad = [
        ({"thumbs": "up"}, "missing_required_parameter", "request_id"),
        ({"request_id": 7, "thumbs": "up"}, "invalid_type", "request_id"),
        ({"request_id": served[1][1]}, "missing_required_parameter", "score"),
        ({"request_id": served[1][1], "score": 1.5}, "invalid_value", "score"),
        ({"request_id": served[1][1], "score": "good"}, "invalid_type", "score"),
        ({"request_id": served[1][1], "thumbs": "sideways"}, "invalid_value", "thumbs"),
        ({"request_id": served[1][1], "thumbs": "up", "score": 1}, "invalid_value", "score"),
    ]
    for body, code, param in bad:
        st, j = feedback(gw, body)
        assert st == 400 and j["error"]["code"] == code and j["error"]["param"] == param, (body, st, j)
    st, _, data = post(gw, b"{not json", path="/v1/feedback")
    assert st == 400 and json.loads(data)["error"]["type"] == "invalid_request_error"
    st, _, _ = request(gw, "GET", "/v1/feedback")
    assert st == 405
    # a request of a model without an experiment cannot get feedback
    st, _, _ = post(gw, chat("no experiment", model="demo-b"))
    assert st == 200


def test_feedback_expires(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0)]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db, extra="feedback_ttl: 300ms"))
    st, _, rid, _ = ask(gw, "late")
    assert st == 200
    time.sleep(0.5)
    st, j = feedback(gw, {"request_id": rid, "thumbs": "up"})
    assert st == 404 and j["error"]["code"] == "feedback_request_not_found", j


class Load:
    """Requests from 300 users in a thread; each answered request of an arm
    in `thumbs_down` gets a thumbs down, of any other arm a thumbs up."""

    def __init__(self, port, thumbs_down=(), feedback_share=1.0):
        self.port, self.stop, self.n = port, False, 0
        self.down, self.share = set(thumbs_down), feedback_share
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        i = 0
        deadline = time.time() + 60 * SLOW
        while not self.stop and time.time() < deadline:
            try:
                st, variant, rid, _ = ask(self.port, f"u{i % 300}")
                if st == 200 and rid and (i % 10) < self.share * 10:
                    feedback(self.port, {"request_id": rid, "thumbs": "down" if variant in self.down else "up"})
            except Exception:
                pass
            i += 1
            self.n = i

    def end(self):
        self.stop = True
        self.t.join(10)


def wait_verdict(port, arm_name, metric, verdict, timeout=40):
    deadline = time.time() + timeout * SLOW
    r = None
    while time.time() < deadline:
        r = experiment(port)
        if arm(r, arm_name)["comparisons"][metric]["verdict"] == verdict:
            return r
        time.sleep(0.2)
    raise AssertionError(f"{arm_name} {metric} never {verdict}: {json.dumps(arm(r, arm_name))}")


def test_failing_arm_reported_worse(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 0.3)]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db))
    load = Load(gw, feedback_share=0)
    r = wait_verdict(gw, "b", "failures", "worse")
    load.end()
    b = arm(r, "b")
    assert b["comparisons"]["failures"]["p"] <= 0.05
    assert b["success"]["cs_high"] < 1 and b["success"]["cs_low"] < 0.7 < b["success"]["cs_high"] + 0.1
    assert arm(r, "control")["counts"]["failures"] <= 2


def test_disliked_arm_worse_on_feedback_equal_arm_not(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0) for _ in range(3)]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db, shares=[34, 33, 33]))
    load = Load(gw, thumbs_down=("c",))
    r = wait_verdict(gw, "c", "feedback", "worse")
    load.end()
    r = experiment(gw)
    assert arm(r, "c")["feedback"]["positive"] == 0 and arm(r, "c")["feedback"]["negative"] > 0
    assert arm(r, "b")["comparisons"]["feedback"]["verdict"] == "no difference shown yet", arm(r, "b")
    assert arm(r, "b")["comparisons"]["failures"]["verdict"] == "no difference shown yet"
    assert arm(r, "b")["feedback"]["rate"] == 1 and arm(r, "b")["feedback"]["cs_low"] > 0.5


def test_counts_survive_a_restart_and_report(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 0.5)]
    db = os.path.join(env.tmp, "store.db")
    cfg = exp_config(sims, db)
    gw = env.gateway(cfg)
    rids = []
    for i in range(60):
        st, variant, rid, _ = ask(gw, f"r{i}")
        if st == 200:
            rids.append(rid)
    assert feedback(gw, {"request_id": rids[0], "thumbs": "down"})[0] == 200
    before = experiment(gw)
    env.last_gateway.stop()  # the last counts are written at stop
    gw = env.gateway(cfg)
    after = experiment(gw)
    for a, b in zip(before["arms"], after["arms"]):
        assert a["counts"] == b["counts"], (a["counts"], b["counts"])
    assert sum(a["counts"]["requests"] for a in after["arms"]) == 60
    for i in range(20):
        ask(gw, f"r{i}")
    wait_stored(db, "ab", "control", "requests", arm(before, "control")["counts"]["requests"] + 1)
    env.last_gateway.stop()
    rc, out, err = report(db)
    assert rc == 0, err
    assert "experiment ab: model demo, 2 arms" in out and "arm control [control]" in out, out
    assert "arm b (model demo-b, 50%)" in out and "failures" in out and "feedback" in out, out
    rc, out, err = report(db, "--format", "json")
    assert rc == 0, err
    j = json.loads(out)["experiments"][0]
    assert j["name"] == "ab" and [a["name"] for a in j["arms"]] == ["control", "b"]
    assert sum(a["counts"]["requests"] for a in j["arms"]) == 80
    assert sum(a["feedback"]["negative"] for a in j["arms"]) == 1
    assert set(j["arms"][1]["comparisons"]) == {"failures", "latency", "ttft", "cost", "feedback"}
    rc, out, err = report(db, "--format", "html", "--experiment", "ab")
    assert rc == 0 and "<table>" in out and "control" in out, err
    rc, out, err = report(db, "--experiment", "nope")
    assert rc == 1 and "no experiment named 'nope'" in err
    # another arm list is another experiment: counted again from 0
    gw = env.gateway(cfg.replace("share: 50 }", "share: 60 }", 1).replace("share: 50 }", "share: 40 }", 1))
    r = experiment(gw)
    assert sum(a["counts"]["requests"] for a in r["arms"]) == 0, r


def test_admin_key_and_config_errors(env):
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0)]
    db = os.path.join(env.tmp, "store.db")
    os.environ["SHADE_TEST_ADMIN_KEY"] = "k3y"
    gw = env.gateway(exp_config(sims, db, top_extra="admin:\n  key_env: SHADE_TEST_ADMIN_KEY"))
    assert request(gw, "GET", "/admin/experiments")[0] == 401
    st, _, body = request(gw, "GET", "/admin/experiments", headers={"x-shade-admin-key": "k3y"})
    assert st == 200 and [x["name"] for x in json.loads(body)["experiments"]] == ["ab"]
    # feedback is the clients': no admin key needed
    st, _, rid, _ = ask(gw, "someone")
    assert feedback(gw, {"request_id": rid, "thumbs": "up"})[0] == 200
    good = exp_config([1, 2], "/tmp/x.db")
    bad = [
        (good.replace("share: 50 }", "share: 40 }", 1), "the arms' shares sum to 90, not 100"),
        (good.replace("name: b,", "name: control,"), 'duplicate arm name "control"'),
        (good.replace("model: demo-b, share", "model: nope, share"), 'arm "b": no model named "nope"'),
        (good.replace("    model: demo\n", "    model: nope\n"), 'experiment "ab": no model named "nope"'),
        (good.replace("      - { name: b, model: demo-b, share: 50 }\n", "").replace("share: 50", "share: 100"),
         "at least 2"),
        (good.replace("check_interval: 100ms", "check_interval: 100ms\n    unit: header"),
         'unit: header needs "unit_header"'),
        (good.replace("check_interval: 100ms", "check_interval: 100ms\n    alpha: 0.7"), "alpha must be in (0, 0.5]"),
        (good.replace("shadow_store:", "rollouts:\n  - name: r\n    model: demo\n    candidate: demo-b\n"
                      "    steps: [{percent: 10}]\nshadow_store:"), 'model "demo" is already moved by rollout "r"'),
        (good.replace("shadow_store:", "  - name: ab2\n    model: demo\n    arms:\n"
                      "      - { name: x, model: demo, share: 50 }\n      - { name: y, model: demo-b, share: 50 }\n"
                      "shadow_store:"), 'experiment "ab" already splits model "demo"'),
        (good.replace("check_interval: 100ms", "check_interval: 100ms\n    wat: 1"), "unknown key"),
    ]
    for cfg, want in bad:
        path = os.path.join(env.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(cfg.replace("{PORT}", "1"))
        p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr and "bad.yaml:" in p.stderr, (want, p.stderr)
    nine = exp_config([1, 2], "/tmp/x.db").replace(
        "      - { name: b, model: demo-b, share: 50 }\n",
        "".join(f"      - {{ name: a{i}, model: demo-b, share: 6.25 }}\n" for i in range(8)))
    path = os.path.join(env.tmp, "nine.yaml")
    with open(path, "w") as f:
        f.write(nine.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode != 0 and "at most 8 arms (it has 9)" in p.stderr, p.stderr


def test_spans_carry_the_experiment_arm(env):
    """The request span names the experiment and the arm that served it."""
    from test_telemetry import OtlpReceiver, attrs
    rx = OtlpReceiver()
    try:
        a = env.sim("--ttft-ms", 0, "--tps", 0)
        b = env.sim("--ttft-ms", 0, "--tps", 0)
        db = os.path.join(env.tmp, "store.db")
        log = os.path.join(env.tmp, "access.log")
        gw = env.gateway(exp_config([a, b], db, top_extra=f"tracing:\n  endpoint: http://127.0.0.1:{rx.port}"
                                                          "/v1/traces\n  interval: 100ms\n"
                                                          f"access_log:\n  path: {log}\n  flush: 100ms"))
        arms = {}
        for i in range(30):
            st, variant, reqid, _ = ask(gw, f"user{i}")
            assert st == 200
            arms[reqid] = variant
        assert set(arms.values()) == {"control", "b"}, arms
        got = rx.wait(lambda s: attrs(s).get("shade.request_id") in arms, n=len(arms))
        for s in got:
            at = attrs(s)
            assert at["shade.experiment"] == "ab" and at["shade.variant"] == arms[at["shade.request_id"]], at
            assert "shade.rollout" not in at, at
        # and the access log names the arm too
        deadline = time.time() + 5
        lines = []
        while time.time() < deadline and len(lines) < len(arms):
            with open(log) as f:
                lines = [json.loads(l) for l in f if l.strip()]
            time.sleep(0.05)
        assert {x["request_id"]: x["variant"] for x in lines if x["request_id"] in arms} == arms
    finally:
        rx.close()


def judge_exp_config(ports, judge_port, db, extra="sample_percent: 100"):
    """exp_config with a judge model served by `shade sim --judge`."""
    cfg = exp_config(ports, db, extra="judge:\n" + "\n".join("  " + l for l in extra.strip().splitlines()))
    cfg = cfg.replace("    judge:\n", "    judge:\n      model: judge\n", 1)
    return cfg.replace("experiments:", f"  - name: judge\n    backends:\n      - url: http://127.0.0.1:{judge_port}\n"
                       "experiments:", 1)


def test_judge_prefers_the_control_over_a_worse_arm_not_an_equal_one(env):
    """Arm b keeps 30 % of its words (`shade sim --quality 0.3`), arm c
    answers as the control does.  Every arm request is also sent to the
    control's model and the two answers are judged in both orders by
    `shade sim --judge`: b loses every pair and is shown worse on judge
    preference (always-valid), c ties every pair and is shown nothing;
    the pairs and verdicts are in the store, the report and the metrics
    say the same."""
    sims = [env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo"),
            env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo", "--quality", "0.3"),
            env.sim("--ttft-ms", 0, "--tps", 0, "--model", "demo")]
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(judge_exp_config(sims, judge, db))
    for i in range(60):
        st, _, _, _ = ask(gw, f"judged-{i}", stream=bool(i % 3 == 0))
        assert st == 200
    deadline = time.time() + 20 * SLOW
    while True:
        r = experiment(gw)
        b, c = arm(r, "b"), arm(r, "c")
        s = r["judge"]["samples"]
        judged = sum(b["judgements"].values()) + sum(c["judgements"].values())
        arm_requests = b["counts"]["requests"] + c["counts"]["requests"]
        if s["sampled"] == s["paired"] == judged == arm_requests or time.time() > deadline:
            break
        time.sleep(0.1)
    s = r["judge"]["samples"]
    assert r["judge"]["model"] == "judge" and s["paired"] == s["sampled"] > 30, r["judge"]
    assert b["judgements"]["loss"] == b["counts"]["requests"] > 12 and b["judgements"]["win"] == 0, b
    assert c["judgements"]["tie"] == c["counts"]["requests"] > 0 and c["judgements"]["loss"] == 0, c
    assert b["comparisons"]["judge"]["verdict"] == "worse", b["comparisons"]["judge"]
    assert c["comparisons"]["judge"]["verdict"] == "no difference shown yet", c["comparisons"]["judge"]
    assert r["tests"] == 24 and "judge" not in arm(r, "control").get("comparisons", {}), r
    m = metrics(gw)
    assert m['shade_experiment_judgements_total{experiment="ab",arm="b",outcome="loss"}'] == b["judgements"]["loss"]
    assert m['shade_experiment_judgements_total{experiment="ab",arm="c",outcome="tie"}'] == c["judgements"]["tie"]
    env.last_gateway.stop()
    import sqlite3
    con = sqlite3.connect(db)
    rows = con.execute("SELECT j.order1, j.order2, j.outcome, j.arm, p.prompt, p.control, p.answer "
                       "FROM experiment_judgements j JOIN experiment_pairs p ON p.id = j.pair_id "
                       "WHERE j.experiment = 'ab' AND j.arm = 'b'").fetchall()
    con.close()
    assert len(rows) == b["judgements"]["loss"], len(rows)
    o1, o2, outcome, arm_name, prompt, control, answer = rows[0]
    assert (o1, o2, outcome, arm_name) == ("A", "B", "loss", "b"), rows[0]
    assert "hello from judged-" in prompt and control and answer and control != answer, rows[0]
    rc, out, err = report(db)
    assert rc == 0, err
    assert "judge judge: each verdict asked in both orders" in out, out
    lines = [l.split() for l in out.splitlines()]
    judge_lines = [l for l in lines if l and l[0] == "judge" and len(l) > 1 and l[1] in ("worse", "no", "better")]
    assert [l[1] for l in judge_lines] == ["worse", "no"], out
    rc, out, err = report(db, "--format", "json")
    rj = json.loads(out)["experiments"][0]
    assert arm(rj, "b")["comparisons"]["judge"]["verdict"] == "worse", rj
    assert arm(rj, "b")["judgements"]["loss"] == b["judgements"]["loss"], rj
    rc, out, err = report(db, "--format", "html")
    assert rc == 0 and "<td>judge</td><td class=\"worse\">worse</td>" in out, out


def test_judge_config_errors(env):
    """judge.model names a served model that is not the experiment's nor an
    arm's; `shade check` says where."""
    good = judge_exp_config([1, 2], 3, "/tmp/x.db")
    bad = [
        (good.replace("model: judge\n", "model: nope\n"), 'no judge model named "nope"'),
        (good.replace("model: judge\n", "model: demo-b\n"), "the judge must be neither the experiment's model nor"),
        (good.replace("model: judge\n", "model: demo\n"), "the judge must be neither the experiment's model nor"),
        (good.replace("sample_percent: 100", "sample_percent: 0"), "judge.sample_percent must be above 0"),
        (good.replace("sample_percent: 100", "sample_percent: 101"), "sample_percent"),
    ]
    for cfg, want in bad:
        path = os.path.join(env.tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(cfg.replace("{PORT}", "1"))
        p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
        assert p.returncode != 0 and want in p.stderr and "bad.yaml:" in p.stderr, (want, p.stderr)
    path = os.path.join(env.tmp, "good.yaml")
    with open(path, "w") as f:
        f.write(good.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_feedback_found_after_a_reload(env):
    """The feedback map is in the shared state: a request served before a
    SIGHUP gets its feedback from the new serving process, once."""
    import signal
    sims = [env.sim("--ttft-ms", 0, "--tps", 0), env.sim("--ttft-ms", 0, "--tps", 0)]
    db = os.path.join(env.tmp, "store.db")
    gw = env.gateway(exp_config(sims, db))
    proc = env.last_gateway
    served = [ask(gw, f"reload-{i}") for i in range(6)]
    assert all(s[0] == 200 for s in served)
    st, j = feedback(gw, {"request_id": served[0][2], "thumbs": "up"})  # given before the reload
    assert st == 200, j
    old = proc.children()[0]
    os.kill(proc.pid, signal.SIGHUP)
    deadline = time.time() + 10 * harness.SLOW
    while time.time() < deadline and (not proc.children() or proc.children()[0] == old):
        time.sleep(0.05)
    while time.time() < deadline and old in proc.children():  # the old one has drained: only the new answers
        time.sleep(0.05)
    assert old not in proc.children()
    for variant, rid in ((s[1], s[2]) for s in served[1:]):
        st, j = feedback(gw, {"request_id": rid, "thumbs": "down"})
        assert st == 200 and j["arm"] == variant, (st, j)
    st, j = feedback(gw, {"request_id": served[0][2], "thumbs": "down"})
    assert st == 409 and j["error"]["code"] == "feedback_already_given", j
