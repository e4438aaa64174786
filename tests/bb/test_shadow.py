"""Shadow deployment: mirroring, isolation of the user's path, accounting,
the pair store (content, flush on shutdown, kill -9), skip rules, leg
rewriting, auto-stop and the admin API — against the real binary."""
import json
import os
import signal
import socket
import sqlite3
import threading
import time

from harness import (SLOW, FakeUpstream, chat, free_port, json_response, metrics, post, request,
                     sse_events, stream_text)


def shadow_config(primary, shadow_url, db, shadow_extra="", top_extra="", model_extra=""):
    """demo over `primary`; shadow `cand` of demo to the backend at shadow_url."""
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 2", "  log_level: warn",
             "models:", "  - name: demo", "    price: { input: 1.0, output: 2.0 }",
             "    backends:", f"      - url: http://127.0.0.1:{primary}", "        name: p0"]
    lines += ["    " + l for l in model_extra.strip().splitlines()] if model_extra.strip() else []
    lines += ["shadows:", "  - name: cand", "    model: demo", "    backends:",
              f"      - url: {shadow_url}", "        name: s0"]
    lines += ["    " + l for l in shadow_extra.strip().splitlines()] if shadow_extra.strip() else []
    lines += ["shadow_store:", f"  path: {db}"]
    lines += top_extra.strip().splitlines() if top_extra.strip() else []
    return "\n".join(lines) + "\n"


def shadows(port, headers=None):
    st, _, body = request(port, "GET", "/admin/shadows", headers=headers)
    assert st == 200, body
    return {s["name"]: s for s in json.loads(body)["shadows"]}


def wait_until(cond, timeout=10, what="condition"):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def settled(port, n=None):
    """Wait until every mirrored request is stored or dropped; returns counters."""
    def done():
        c = shadows(port)["cand"]["counters"]
        ok = c["mirrored"] == c["stored"] + c["dropped"] and (n is None or c["mirrored"] >= n)
        return c if ok else None
    return wait_until(done, what="pairs to settle")


def db_rows(db, sql, *args):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def stop_gateway(env):
    p = env.last_gateway
    assert p.stop() == 0, p.output()


# ---------- recording ----------

def test_pairs_recorded_with_both_answers(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0, "--seed", 1)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--seed", 2, "--max-tokens", 20)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 100"))
    answers = {}
    for i in range(6):
        st, h, body = post(gw, chat(f"question {i}"), headers={"x-request-id": f"req-{i}"})
        assert st == 200, body
        answers[f"req-{i}"] = json.loads(body)["choices"][0]["message"]["content"]
    for i in range(6, 10):
        st, h, body = post(gw, chat(f"question {i}", stream=True), headers={"x-request-id": f"req-{i}"})
        assert st == 200, body
        answers[f"req-{i}"] = stream_text(body)
    c = settled(gw, 10)
    assert c["mirrored"] == 10 and c["stored"] == 10 and c["dropped"] == 0, c
    # the legs in the request families: variants of the mirrored model
    m = metrics(gw)
    for v in ("shadow", "aa"):
        assert m[f'shade_requests_total{{model="demo",variant="{v}",backend="",code="200",class="2xx"}}'] == 10
        assert m[f'shade_request_duration_seconds_count{{model="demo",variant="{v}",backend=""}}'] == 10
    assert m['shade_output_tokens_total{model="demo",variant="shadow",backend=""}'] == 200
    stop_gateway(env)
    pairs = db_rows(db, "SELECT id, request_id, shadow, model, endpoint, prompt, length(prompt_hash) FROM pairs")
    assert len(pairs) == 10
    for pid, rid, sh, model, ep, prompt, hl in pairs:
        assert (sh, model, ep, hl) == ("cand", "demo", "chat", 64)
        assert "question" in prompt
        legs = {r[0]: r[1:] for r in db_rows(
            db, "SELECT leg, status, error, response, backend, streamed, ttft_ms, tokens_out FROM legs "
                "WHERE pair_id = ?", pid)}
        assert set(legs) == {"primary", "shadow", "aa"}, legs
        # the stored primary answer is exactly what the user received
        assert legs["primary"][2] == answers[rid], (legs["primary"][2], answers[rid])
        assert legs["primary"][0] == 200 and legs["primary"][1] is None
        assert legs["shadow"][0] == 200 and legs["shadow"][3] == "s0"
        assert legs["aa"][3] == "p0"
        streamed = int(rid.split("-")[1]) >= 6
        assert legs["primary"][4] == streamed
        if streamed:
            assert legs["primary"][5] is not None and legs["shadow"][5] is not None
        # the candidate answers 20 tokens, the primary 64
        assert legs["shadow"][6] == 20 and legs["primary"][6] == 64
    cmp = db_rows(db, "SELECT against, status_agree, exact, rouge_l, length_ratio FROM comparisons")
    assert len(cmp) == 20
    aa = [r for r in cmp if r[0] == "aa"]
    sh = [r for r in cmp if r[0] == "shadow"]
    # same simulator, same seed: the A/A leg answers exactly the same
    assert all(r[1] == 1 and r[2] == 1 and r[3] == 1.0 for r in aa), aa
    assert all(r[1] == 1 and r[2] == 0 and r[3] < 0.5 and r[4] < 0.5 for r in sh), sh
    counters = dict(db_rows(db, "SELECT name, value FROM counters WHERE shadow = 'cand'"))
    assert counters["mirrored"] == 10 and counters["stored"] == 10, counters


def test_leg_rewriting_and_headers(env):
    seen = []

    def respond(req):
        seen.append(req)
        return json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    up = FakeUpstream(respond)
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{up.port}", db,
                                   "upstream_model: cand-v2\nstream: \"false\"\naa_percent: 0\n"
                                   "set: { temperature: 0, top_p: 0.5, user: shadow-probe }"))
    st, _, body = post(gw, chat("hi", temperature=0.9, stream=True), headers={"authorization": "Bearer client-key"})
    assert st == 200
    settled(gw, 1)
    assert len(seen) == 1
    head, _, payload = seen[0].partition(b"\r\n\r\n")
    assert b"authorization" not in head.lower(), head       # the client's key stays with the primary
    assert b"x-shade-shadow: cand" in head.lower()
    req = json.loads(payload)
    assert req["model"] == "cand-v2" and req["temperature"] == 0 and req["top_p"] == 0.5
    assert req["user"] == "shadow-probe" and req["stream"] is False
    assert req["messages"] == [{"role": "user", "content": "hi"}]


def test_duplicate_keys_refused_before_mirroring(env):
    """A body with two top-level "model" members is refused before any leg
    starts; a duplicate nested in a message reaches the leg as it was, next
    to the leg's one top-level model and its overrides."""
    seen = []

    def respond(req):
        seen.append(req)
        return json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                           "finish_reason": "stop"}]})
    up = FakeUpstream(respond)
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{up.port}", db,
                                   "upstream_model: cand-v2\naa_percent: 0\nset: { temperature: 0 }"))
    st, _, body = post(gw, b'{"model":"other","model":"demo","messages":[{"role":"user","content":"hi"}]}')
    assert st == 400 and json.loads(body)["error"]["param"] == "model", body
    st, _, body = post(gw, b'{"model":"demo","messages":[{"role":"user","content":"hi"}],'
                           b'"temperature":0.5,"temperature":0.9}')
    assert st == 200, body
    nested = b'{"model":"demo","messages":[{"role":"user","content":"hi","model":"x","model":"y"}]}'
    st, _, body = post(gw, nested)
    assert st == 200, body
    c = settled(gw, 2)
    assert c["mirrored"] == 2, c
    assert len(seen) == 2
    # an overridden member the client sent twice goes to the leg once
    legs = [r.partition(b"\r\n\r\n")[2] for r in seen]
    leg = next(b for b in legs if b'"temperature"' in b and b'"x"' not in b)
    assert leg.count(b'"temperature"') == 1 and leg.count(b'"model"') == 1, leg
    leg = next(b for b in legs if b'"x"' in b)
    assert b'{"role":"user","content":"hi","model":"x","model":"y"}' in leg, leg
    assert leg.count(b'"model":"cand-v2"') == 1 and leg.startswith(b'{"messages"'), leg



# ---------- isolation: the user's path never waits ----------

def isolation_case(env, shadow_url, deadline=6, bound=2.4, db="pairs.db"):
    """Two requests on one keep-alive connection must each complete within
    `bound` seconds: less than the time the shadow would need (its deadline,
    or its own answer time), so a primary that waited for it would fail."""
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, db)
    gw = env.gateway(shadow_config(primary, shadow_url, db, f"deadline: {deadline}s\naa_percent: 0"))
    s = socket.create_connection(("127.0.0.1", gw))
    body = json.dumps(chat("isolation")).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%s" % (len(body), body))
    s.settimeout(bound)
    for _ in range(2):
        t0 = time.time()
        s.sendall(req)
        data = b""
        while b'"finish_reason"' not in data:
            chunk = s.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert time.time() - t0 < bound
    s.close()
    return gw, db


def test_isolation_hung_shadow(env):
    hung = env.sim("--hang-rate", 1)
    gw, db = isolation_case(env, f"http://127.0.0.1:{hung}")
    c = settled(gw, 2)  # the legs end by the deadline (6 s)
    assert c["stored"] == 2
    stop_gateway(env)
    assert db_rows(db, "SELECT error, status FROM legs WHERE leg = 'shadow'") == [("deadline", 0)] * 2


def test_isolation_down_shadow(env):
    gw, db = isolation_case(env, f"http://127.0.0.1:{free_port()}")
    settled(gw, 2)
    stop_gateway(env)
    errs = [r[0] for r in db_rows(db, "SELECT error FROM legs WHERE leg = 'shadow'")]
    assert len(errs) == 2 and all(e in ("connect", "no_backend") for e in errs), errs


def test_isolation_slow_and_failing_shadow(env):
    slow = env.sim("--ttft-ms", 5000, "--tps", 0)
    gw, db = isolation_case(env, f"http://127.0.0.1:{slow}", deadline=10, bound=2.5)
    failing = env.sim("--error-rate", 1)
    gw2, db2 = isolation_case(env, f"http://127.0.0.1:{failing}", db="failing.db")
    settled(gw2, 2)
    c = settled(gw, 2)
    assert c["stored"] == 2
    rows = db_rows(db, "SELECT error, latency_ms FROM legs WHERE leg = 'shadow'")
    assert all(e is None and lat >= 4900 for e, lat in rows), rows
    assert db_rows(db2, "SELECT error, status FROM legs WHERE leg = 'shadow'") == [("http_5xx", 500)] * 2


# ---------- accounting ----------

def test_cap_drops_are_counted(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    hung = env.sim("--hang-rate", 1)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{hung}", db,
                                   "deadline: 1s\nmax_concurrent: 2\naa_percent: 0"))
    for i in range(10):
        assert post(gw, chat(f"q{i}"))[0] == 200
    c = settled(gw, 10)
    assert c["mirrored"] == 10
    assert c["dropped_by_reason"]["cap"] == 8 and c["stored"] == 2, c
    m = metrics(gw)
    assert m['shade_shadow_dropped_total{shadow="cand",reason="cap"}'] == 8
    assert m['shade_shadow_mirrored_total{shadow="cand"}'] == 10
    stop_gateway(env)
    counters = dict(db_rows(db, "SELECT name, value FROM counters WHERE shadow = 'cand'"))
    assert counters["mirrored"] == counters["stored"] + sum(v for k, v in counters.items()
                                                            if k.startswith("dropped_")), counters
    assert counters["dropped_cap"] == 8 and counters["stored"] == 2


def test_flush_on_shutdown(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    slow = env.sim("--ttft-ms", 400, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{slow}", db, "aa_percent: 0"))
    for i in range(8):
        assert post(gw, chat(f"q{i}"))[0] == 200
    # the legs are still running: stop now; the drain waits for them and the
    # writer flushes every pair before the process exits
    stop_gateway(env)
    counters = dict(db_rows(db, "SELECT name, value FROM counters WHERE shadow = 'cand'"))
    assert counters.get("mirrored") == 8 and counters.get("stored") == 8, counters
    assert db_rows(db, "SELECT count(*) FROM legs WHERE leg = 'shadow' AND error IS NULL") == [(8,)]


def test_store_survives_kill9_mid_load(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0, "--workers", 2)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 50"))
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                post(gw, chat("load"), timeout=2)
            except OSError:
                pass
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: shadows(gw)["cand"]["counters"]["stored"] >= 50, what="pairs under load")
    serving = env.last_gateway.children()
    assert serving
    os.kill(serving[0], signal.SIGKILL)   # the serving process dies mid-transaction
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    orphans = con.execute("SELECT count(*) FROM legs WHERE pair_id NOT IN (SELECT id FROM pairs)").fetchone()[0]
    con.close()
    assert n >= 50 and orphans == 0
    # the master started a new serving process, which opens the same file
    wait_until(lambda: shadows(gw)["cand"]["counters"]["stored"] >= 0 and post(gw, chat("after"))[0] == 200,
               what="a new serving process")
    settled(gw)
    stop_gateway(env)
    assert db_rows(db, "SELECT count(*) FROM pairs")[0][0] > n


# ---------- selection ----------

def test_skip_rules(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0"))
    assert post(gw, chat("x"), headers={"x-shade-no-shadow": "1"})[0] == 200
    tool = chat("x")
    tool["messages"] += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]
    assert post(gw, tool)[0] == 200
    assert post(gw, {"model": "demo", "input": "x"}, path="/v1/embeddings")[0] == 200
    assert post(gw, chat("y"))[0] == 200
    c = settled(gw, 1)
    s = shadows(gw)["cand"]
    assert c["mirrored"] == 1
    assert s["counters"]["skipped_by_reason"]["opt_out"] == 1
    assert s["counters"]["skipped_by_reason"]["tool_results"] == 1
    assert s["counters"]["skipped_by_reason"]["endpoint"] == 1


def test_hash_selection_is_stable_per_user(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db,
                                   "aa_percent: 0\nselect: hash\nsample: 50\nhash_header: x-user"))
    users = [f"user-{i}" for i in range(40)]
    for rnd in range(2):
        for u in users:
            assert post(gw, chat(f"{u} round {rnd}"), headers={"x-user": u})[0] == 200
    settled(gw)
    stop_gateway(env)
    rows = db_rows(db, "SELECT prompt FROM pairs")
    picked = [{u for u in users if any(f'"{u} round {rnd}"' in p[0] for p in rows)} for rnd in range(2)]
    assert picked[0] == picked[1], picked          # the same users both times
    assert 8 <= len(picked[0]) <= 32, picked[0]    # about half of them


def test_select_by_header(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db,
                                   "aa_percent: 0\nselect: header\nselect_header: x-shadow-me"))
    assert post(gw, chat("a"))[0] == 200
    assert post(gw, chat("b"), headers={"x-shadow-me": "1"})[0] == 200
    assert post(gw, chat("c"), headers={"x-shadow-me": "0"})[0] == 200
    c = settled(gw, 1)
    assert c["mirrored"] == 1
    assert shadows(gw)["cand"]["counters"]["skipped_by_reason"]["not_selected"] == 2


# ---------- live analysis, auto-stop, admin ----------

def test_auto_stop_on_failing_shadow(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    failing = env.sim("--error-rate", 1)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{failing}", db,
                                   "aa_percent: 0\nanalysis: { interval: 200ms, min_pairs: 10 }"))
    # the CUSUM at the default bar (0.90, false-stop chance 0.05 within
    # 100000 pairs) needs 21 failures in a row: log(0.2/0.1) = 0.693 each
    # against log(100000/0.05) = 14.5; 20 are not enough
    for i in range(20):
        assert post(gw, chat(f"q{i}"))[0] == 200
    settled(gw, 20)
    time.sleep(0.8)  # several analysis intervals
    assert shadows(gw)["cand"]["state"] == "running"
    for i in range(20, 25):
        assert post(gw, chat(f"q{i}"))[0] == 200
    s = wait_until(lambda: (lambda x: x if x["state"] == "stopped" else None)(shadows(gw)["cand"]),
                   what="auto-stop")
    assert "auto-stop" in s["reason"] and "below 90.0%" in s["reason"], s["reason"]
    m = metrics(gw)
    assert m['shade_shadow_state{shadow="cand",state="stopped"}'] == 1
    before = shadows(gw)["cand"]["counters"]["mirrored"]
    assert post(gw, chat("after"))[0] == 200
    s = shadows(gw)["cand"]
    assert s["counters"]["mirrored"] == before and s["counters"]["skipped_by_reason"]["stopped"] >= 1
    # the live report names the rule
    st, _, body = request(gw, "GET", "/admin/shadows/cand/report?format=json")
    assert st == 200, body
    stop_gateway(env)
    ev = db_rows(db, "SELECT kind, detail FROM events WHERE shadow = 'cand'")
    assert ev and ev[-1][0] == "auto_stop", ev


def test_auto_stop_counts_from_resume(env):
    """A resume is a new start: the anytime-valid analysis and the CUSUM
    begin again from it, so the failures before the stop do not stop the
    shadow again at once."""
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    failing = env.sim("--error-rate", 1)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{failing}", db,
                                   "aa_percent: 0\nanalysis: { interval: 200ms, min_pairs: 10, stop_horizon: 1000 }"))
    # horizon 1000: log(1000/0.05) = 9.9, 15 failures in a row
    for i in range(16):
        assert post(gw, chat(f"q{i}"))[0] == 200
    wait_until(lambda: shadows(gw)["cand"]["state"] == "stopped", what="auto-stop")
    assert request(gw, "POST", "/admin/shadows/cand/start")[0] == 200
    for i in range(5):
        assert post(gw, chat(f"r{i}"))[0] == 200
    settled(gw, 21)
    time.sleep(0.8)
    s = shadows(gw)["cand"]
    assert s["state"] == "running", s
    # the live analysis counts from the resume too
    st, _, body = request(gw, "GET", "/admin/shadows/cand/report?format=json")
    assert st == 200, body
    rep = json.loads(body)
    sec = rep["shadows"][0] if "shadows" in rep else rep
    assert sec["pairs"] == 5 and sec["analysis_start"] is not None, sec
    assert sec["decision"]["pairs"] == 5 and sec["decision"]["autostop"]["statistic"] > 0, sec["decision"]
    # the live decision (fed piece by piece) is the one `shade report
    # --since start` computes by replaying the store
    import harness
    import subprocess
    out = subprocess.run([harness.BIN, "report", "--db", db, "--since", "start", "--format", "json",
                          "--autostop-horizon", "1000"],
                         capture_output=True, timeout=60 * SLOW, check=True).stdout
    replay = json.loads(out)["shadows"][0]["decision"]
    assert replay == sec["decision"], (replay, sec["decision"])
    for i in range(15):
        assert post(gw, chat(f"s{i}"))[0] == 200
    wait_until(lambda: shadows(gw)["cand"]["state"] == "stopped", what="second auto-stop")


def test_admin_api_and_key(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    os.environ["SHADE_TEST_ADMIN_KEY"] = "s3cret"
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0",
                        top_extra="admin:\n  key_env: SHADE_TEST_ADMIN_KEY")
    gw = env.gateway(cfg)
    st, _, body = request(gw, "GET", "/admin/shadows")
    assert st == 401 and json.loads(body)["error"]["code"] == "admin_key_required"
    st, _, body = request(gw, "GET", "/admin/shadows", headers={"authorization": "Bearer wrong"})
    assert st == 401 and json.loads(body)["error"]["code"] == "invalid_admin_key"
    assert request(gw, "GET", "/admin/backends")[0] == 401
    key = {"x-shade-admin-key": "s3cret"}
    assert shadows(gw, key)["cand"]["state"] == "running"
    st, _, body = request(gw, "POST", "/admin/shadows/cand/pause", headers=key)
    assert st == 200 and json.loads(body)["state"] == "paused"
    assert post(gw, chat("while paused"))[0] == 200
    s = shadows(gw, key)["cand"]
    assert s["counters"]["mirrored"] == 0 and s["counters"]["skipped_by_reason"]["paused"] == 1
    assert request(gw, "POST", "/admin/shadows/cand/start", headers=key)[0] == 200
    assert post(gw, chat("running again"))[0] == 200
    assert shadows(gw, key)["cand"]["counters"]["mirrored"] == 1
    st, _, body = request(gw, "POST", "/admin/shadows/nope/stop", headers=key)
    assert st == 404 and json.loads(body)["error"]["code"] == "shadow_not_found"
    assert request(gw, "GET", "/admin/shadows/cand/stop", headers=key)[0] == 405
    assert request(gw, "POST", "/admin/shadows/cand/stop", headers=key)[0] == 200
    stop_gateway(env)
    kinds = [k for k, in db_rows(db, "SELECT kind FROM events WHERE shadow = 'cand' ORDER BY rowid")]
    assert kinds == ["pause", "start", "stop"], kinds
    # a state set at run time survives a restart
    gw = env.gateway(cfg)
    assert shadows(gw, key)["cand"]["state"] == "stopped"


def test_inline_pool_is_hidden(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--model", "v2")
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0"))
    # the inline pool is not a model clients can call or see
    st, _, body = post(gw, {"model": "cand", "messages": [{"role": "user", "content": "x"}]})
    assert st == 404
    st, _, body = request(gw, "GET", "/v1/models")
    assert [m["id"] for m in json.loads(body)["data"]] == ["demo"]
    assert request(gw, "GET", "/readyz")[0] == 200


def test_judge_through_the_gateway(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    worse = env.sim("--ttft-ms", 0, "--tps", 0, "--quality", "0.3")
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0, "--max-tokens", 200)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{worse}", db,
                        "aa_percent: 0\njudge: { model: judge, sample: 100 }")
    cfg = cfg.replace("shadows:", f"  - name: judge\n    backends:\n      - url: http://127.0.0.1:{judge}\n"
                                  "shadows:")
    gw = env.gateway(cfg)
    for i in range(6):
        assert post(gw, chat(f"Tell me about topic {i} in some detail"))[0] == 200
    settled(gw, 6)
    wait_until(lambda: db_rows(db, "SELECT count(*) FROM judgements")[0][0] >= 6, what="judgements")
    m = metrics(gw)
    assert m["shade_judge_judgements_total"] >= 6 and m["shade_judge_calls_total"] >= 12
    # the judge's own requests went through the gateway and were not mirrored
    assert sum(v for k, v in m.items() if k.startswith('shade_requests_total{model="judge"')) >= 12, \
        [k for k in m if "judge" in k]
    assert shadows(gw)["cand"]["counters"]["mirrored"] == 6
    stop_gateway(env)
    outcomes = [o for o, in db_rows(db, "SELECT outcome FROM judgements")]
    # a garbled candidate loses in both orders
    assert outcomes.count("loss") >= 5, outcomes


def test_budget_drops_are_counted(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 64)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db,
                                   "aa_percent: 0\nbudget: { tokens_per_hour: 50 }"))
    assert post(gw, chat("first"))[0] == 200
    settled(gw, 1)   # the first leg spent more than 50 tokens (64 out + the prompt)
    for i in range(3):
        assert post(gw, chat(f"more {i}"))[0] == 200
    c = settled(gw, 4)
    assert c["stored"] == 1 and c["dropped_by_reason"]["budget"] == 3, c


def test_client_abort_does_not_cancel_the_shadow(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 20, "--max-tokens", 60)   # a 3 s stream
    cand = env.sim("--ttft-ms", 300, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0"))
    s = socket.create_connection(("127.0.0.1", gw))
    body = json.dumps(chat("leave early", stream=True)).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(body), body))
    s.settimeout(5 * SLOW)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()   # the user leaves mid-stream
    c = settled(gw, 1)
    assert c["stored"] == 1
    stop_gateway(env)
    legs = dict((leg, (st, err)) for leg, st, err in db_rows(db, "SELECT leg, status, error FROM legs"))
    assert legs["primary"] == (499, "aborted") and legs["shadow"] == (200, None), legs


def test_redaction_and_bounds(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 200)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0")
    cfg += '  redact: ["card [0-9]{4}-[0-9]{4}"]\n  response_max_bytes: 256\n  prompt_max_bytes: 256\n'
    gw = env.gateway(cfg)
    long = "my card 1234-5678 and " + "more words " * 40
    assert post(gw, chat(long))[0] == 200
    settled(gw, 1)
    stop_gateway(env)
    [(prompt, cut, h)] = db_rows(db, "SELECT prompt, prompt_truncated, prompt_hash FROM pairs")
    assert "1234-5678" not in prompt and "[REDACTED]" in prompt and cut == 1 and len(prompt) <= 256
    import hashlib
    raw = json.dumps(chat(long)["messages"]).encode()
    assert h == hashlib.sha256(raw).hexdigest()   # of the whole, unredacted prompt as sent
    rows = db_rows(db, "SELECT length(response), response_truncated FROM legs WHERE leg = 'shadow'")
    assert rows[0][0] <= 256 and rows[0][1] == 1, rows


def test_primary_retried_then_ok_is_recorded_as_success(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0")
    dead = free_port()
    cfg = cfg.replace("        name: p0\n", f"        name: p0\n      - url: http://127.0.0.1:{dead}\n"
                                           "        name: dead\n", 1)
    gw = env.gateway(cfg)
    for i in range(4):   # round robin: one of the first two hits the dead backend and is retried
        assert post(gw, chat(f"q{i}"))[0] == 200
    settled(gw, 4)
    stop_gateway(env)
    assert db_rows(db, "SELECT status, error, backend FROM legs WHERE leg = 'primary'") == [(200, None, "p0")] * 4


def test_hung_candidate_is_ejected_by_outlier_detection(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    hung = env.sim("--hang-rate", 1)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{hung}", db, "aa_percent: 0\ndeadline: 300ms")
    cfg = cfg.replace("        name: s0\n", "        name: s0\n        outlier: { consecutive_errors: 2, base_ejection: 30s }\n")
    gw = env.gateway(cfg)
    for i in range(2):
        assert post(gw, chat(f"first {i}"))[0] == 200
    settled(gw, 2)   # both legs ended by their deadline: the candidate is ejected
    for i in range(3):
        assert post(gw, chat(f"then {i}"))[0] == 200
    settled(gw, 5)
    stop_gateway(env)
    errs = [e for e, in db_rows(db, "SELECT error FROM legs WHERE leg = 'shadow' ORDER BY pair_id")]
    # later legs end at once instead of holding a connection to the hung backend
    assert errs == ["deadline", "deadline", "no_backend", "no_backend", "no_backend"], errs


def test_retention_deletes_old_pairs(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 100")
    gw = env.gateway(cfg)
    for i in range(3):
        assert post(gw, chat(f"q{i}"))[0] == 200
    settled(gw, 3)
    stop_gateway(env)
    # age two of the three pairs by three days
    con = sqlite3.connect(db)
    con.execute("UPDATE pairs SET ts = ts - 3 * 86400 WHERE id IN (SELECT id FROM pairs ORDER BY id LIMIT 2)")
    con.commit()
    con.close()
    env.gateway(cfg + "  retention_days: 1\n")
    wait_until(lambda: db_rows(db, "SELECT count(*) FROM pairs")[0][0] == 1, what="old pairs deleted")
    assert db_rows(db, "SELECT count(*) FROM legs") == [(3,)]          # the kept pair's three legs
    assert db_rows(db, "SELECT count(*) FROM comparisons") == [(2,)]
    assert db_rows(db, "SELECT count(*) FROM legs WHERE pair_id NOT IN (SELECT id FROM pairs)") == [(0,)]
    counters = dict(db_rows(db, "SELECT name, value FROM counters WHERE shadow = 'cand'"))
    assert counters["stored"] == 3   # counters are cumulative: pruning does not rewrite history


# ---------- bounded captures (issue 9) ----------

def padded_answer(pad_bytes, content, usage_out):
    """A non-streamed chat answer whose middle is pad_bytes of padding inside a
    string: any splice of its reads (head + some pad + tail) is still valid
    JSON, with a usage that was never checked against the whole answer."""
    head = b'{"id":"chatcmpl-big","object":"chat.completion","pad":"'
    tail = ('","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],'
            '"usage":{"prompt_tokens":3,"completion_tokens":%d,"total_tokens":%d}}'
            % (json.dumps(content), usage_out, usage_out + 3)).encode()
    total = len(head) + pad_bytes + len(tail)
    return [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (total, head), b"a" * pad_bytes, tail], total


def test_huge_answers_are_never_spliced(env):
    # the primary answers 9 MB (over the proxy's 8 MiB capture), the candidate
    # 5 MB (over the leg's 4 MiB): neither may be stored as a clean success
    # read from whatever reads happened to fit
    p_pieces, p_total = padded_answer(9 << 20, "primary answer", 777)
    s_pieces, s_total = padded_answer(5 << 20, "candidate answer", 555)
    primary = FakeUpstream(lambda req: p_pieces)
    cand = FakeUpstream(lambda req: s_pieces)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary.port, f"http://127.0.0.1:{cand.port}", db, "aa_percent: 0")
    gw = env.gateway(cfg + "  response_max_bytes: 4KiB\n")
    for i in range(3):   # the later ones on pooled connections
        st, _, body = post(gw, chat(f"big {i}"), timeout=60)
        assert st == 200 and len(body) == p_total, (st, len(body))
        assert json.loads(body)["usage"]["completion_tokens"] == 777   # the user's bytes are untouched
    settled(gw, 3)
    m = metrics(gw)
    # usage is not read from a body that was not read whole: estimated (4 bytes a token)
    assert m['shade_usage_estimated_total{model="demo",variant="primary",backend="p0"}'] == 3
    out = m['shade_output_tokens_total{model="demo",variant="primary",backend="p0"}']
    assert out == 3 * (p_total // 4), out
    stop_gateway(env)
    rows = db_rows(db, "SELECT leg, status, error, response, response_truncated, tokens_out, tokens_exact "
                       "FROM legs ORDER BY pair_id, leg")
    assert len(rows) == 6, rows
    for leg, status, err, resp, cut, tout, exact in rows:
        assert (status, err, resp or "", cut) != (200, None, "", 0), rows
        assert status == 200 and err == "too_large" and cut == 1, rows
        assert exact == 0 and tout not in (555, 777), rows     # never the spliced usage
        size = p_total if leg == "primary" else s_total
        assert tout == size // 4, (leg, tout)


def test_unreadable_answers_are_errors_not_empty_successes(env):
    # a 2xx answer that is not a JSON object (here HTML, and JSON cut short)
    # is stored as error protocol, never as 200 with an empty answer
    html = b"<html>busy</html>"
    cand = FakeUpstream(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s"
                                     % (len(html), html)])
    cut = b'{"choices":[{"index":0,"message":{"content":"hi'
    primary = FakeUpstream(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                        b"content-length: %d\r\n\r\n%s" % (len(cut), cut)])
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary.port, f"http://127.0.0.1:{cand.port}", db, "aa_percent: 0"))
    st, _, body = post(gw, chat("q"))
    assert st == 200 and body == cut    # the user gets the upstream's bytes
    settled(gw, 1)
    stop_gateway(env)
    assert db_rows(db, "SELECT leg, status, error FROM legs ORDER BY leg") == \
        [("primary", 200, "protocol"), ("shadow", 200, "protocol")]


def sse_body(events):
    body = b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body), body


def chunk(delta, finish=None):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_event_too_large_to_read_cuts_the_answer_there(env):
    # an event over the SSE reader's 1 MiB is lost to the observer: the stored
    # answer is what came before it, flagged — never "alpha gamma"
    events = [chunk({"role": "assistant", "content": "alpha "}), chunk({"content": "B" * (1200 << 10)}),
              chunk({"content": "gamma"}), chunk({}, "stop"),
              {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
               "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}, b"[DONE]"]
    head, body = sse_body(events)
    primary = FakeUpstream(lambda req: [head, body[:1000], body[1000:]])
    cand = FakeUpstream(lambda req: [head, body])
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary.port, f"http://127.0.0.1:{cand.port}", db, "aa_percent: 0"))
    st, _, got = post(gw, chat("stream", stream=True), timeout=30)
    assert st == 200 and stream_text(got) == "alpha " + "B" * (1200 << 10) + "gamma"
    settled(gw, 1)
    stop_gateway(env)
    rows = db_rows(db, "SELECT leg, status, error, response, response_truncated, finish_reason, tokens_out, "
                       "tokens_exact FROM legs ORDER BY leg")
    # the usage event is an event of its own, read whole: still exact
    assert rows == [("primary", 200, None, "alpha ", 1, "stop", 3, 1),
                    ("shadow", 200, None, "alpha ", 1, "stop", 3, 1)], rows


def test_tool_calls_are_bounded(env):
    # 1000 tool calls of 3 KB each (3 MB) with response_max_bytes 4KiB: whole
    # calls that fit, flagged; streamed, a first call too large alone keeps
    # its name and a cut of its arguments, and only four calls are followed
    args = json.dumps({"text": "x" * 3000})
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": f"f{i}", "arguments": args}}
             for i in range(1000)]
    whole = {"id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "m",
             "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": calls},
                          "finish_reason": "tool_calls"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}}
    long_args = json.dumps({"text": 'quote " and é ' * 400})   # about 6 KB, escapes and UTF-8
    events = [chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "c0", "type": "function",
                                                          "function": {"name": "f0", "arguments": ""}}]})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": long_args[i:i + 100]}}]})
               for i in range(0, len(long_args), 100)]
    events += [chunk({"tool_calls": [{"index": k, "id": f"c{k}", "type": "function",
                                      "function": {"name": f"f{k}", "arguments": "{}"}}]}) for k in range(1, 6)]
    events += [chunk({}, "tool_calls"), b"[DONE]"]
    s_head, s_body = sse_body(events)

    def answer(req):
        return [s_head, s_body] if b'"stream": true' in req or b'"stream":true' in req else json_response(whole)
    primary = FakeUpstream(answer)
    cand = FakeUpstream(answer)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary.port, f"http://127.0.0.1:{cand.port}", db, "aa_percent: 0")
    gw = env.gateway(cfg + "  response_max_bytes: 4KiB\n")
    assert post(gw, chat("tools"), headers={"x-request-id": "json"}, timeout=30)[0] == 200
    assert post(gw, chat("tools", stream=True), headers={"x-request-id": "sse"}, timeout=30)[0] == 200
    settled(gw, 2)
    stop_gateway(env)
    rows = db_rows(db, "SELECT p.request_id, l.leg, l.error, l.tool_calls, l.response_truncated "
                       "FROM legs l JOIN pairs p ON p.id = l.pair_id")
    assert len(rows) == 4, rows
    for rid, leg, err, tools, cut in rows:
        assert err is None and cut == 1, (rid, leg, err, cut)
        assert len(tools.encode()) <= 4096, (rid, leg, len(tools))
        got = json.loads(tools)   # never a broken document
        if rid == "json":
            assert got == [{"name": "f0", "arguments": args}], got[:2]
        else:
            assert [c["name"] for c in got] == ["f0"], got
            assert long_args.startswith(got[0]["arguments"]) and len(got[0]["arguments"]) > 1000, got
    assert max(r[0] for r in db_rows(db, "SELECT max(length(CAST(tool_calls AS BLOB))) FROM legs")) <= 4096


# ---------- bounded memory while mirroring (issue 9) ----------

def test_queue_bytes_bound_drops_are_counted(env):
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0")
    gw = env.gateway(cfg + "  queue_max_bytes: 64KiB\n  prompt_max_bytes: 1MiB\n")
    big = "many words " * 30000          # a 330 KB prompt: its pair alone is over the bound
    for i in range(3):
        assert post(gw, chat(f"{i} {big}"), timeout=30)[0] == 200
    for i in range(3):
        assert post(gw, chat(f"small {i}"))[0] == 200
    c = settled(gw, 6)
    assert c["mirrored"] == 6 and c["stored"] == 3 and c["dropped_by_reason"]["queue_full"] == 3, c
    m = metrics(gw)
    assert m['shade_shadow_dropped_total{shadow="cand",reason="queue_full"}'] == 3
    # all written: nothing held (released just after the batch's commit)
    wait_until(lambda: metrics(gw)["shade_shadow_recorder_queue_bytes"] == 0, what="queue bytes released")
    assert json.loads(request(gw, "GET", "/admin/shadows")[2])["recorder_queue_bytes"] == 0
    stop_gateway(env)
    counters = dict(db_rows(db, "SELECT name, value FROM counters WHERE shadow = 'cand'"))
    assert counters["mirrored"] == counters["stored"] + sum(v for k, v in counters.items()
                                                            if k.startswith("dropped_")), counters
    assert counters["dropped_queue_full"] == 3
    assert sorted(p for p, in db_rows(db, "SELECT prompt FROM pairs")) == \
        [json.dumps(chat(f"small {i}")["messages"]) for i in range(3)]


def test_large_prompt_keeps_only_a_bounded_prefix(env):
    # the pair keeps only what the store can use; the hash is still of the
    # whole unredacted prompt, and a secret across the cut is redacted whole
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = shadow_config(primary, f"http://127.0.0.1:{cand}", db, "aa_percent: 0")
    gw = env.gateway(cfg + '  prompt_max_bytes: 1KiB\n  redact: ["card [0-9]{4}-[0-9]{4}"]\n')
    lead = '[{"role": "user", "content": "'
    text = "w" * (1024 - len(lead) - 8) + "card 1234-5678 " + "more words " * 200000   # 2.2 MB
    assert post(gw, chat(text), timeout=30)[0] == 200
    settled(gw, 1)
    stop_gateway(env)
    [(prompt, cut, h)] = db_rows(db, "SELECT prompt, prompt_truncated, prompt_hash FROM pairs")
    import hashlib
    assert h == hashlib.sha256(json.dumps(chat(text)["messages"]).encode()).hexdigest()
    assert cut == 1 and len(prompt.encode()) <= 1024 and prompt.startswith(lead + "www"), prompt[:60]
    assert "1234" not in prompt, prompt[-40:]


def test_model_set_is_the_body_everyone_sees(env):
    """A model's `set:` (mod_set, a ROUTE-phase module replacing the
    request's body): the upstream and the shadow leg both receive the forced
    parameters, once each, with the client's other members untouched; the
    client's own value of a forced member is gone everywhere."""
    got = {"primary": [], "shadow": []}

    def answer(kind):
        def respond(req):
            got[kind].append(req.partition(b"\r\n\r\n")[2])
            return json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                               "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
        return respond
    primary = FakeUpstream(answer("primary"))
    shadow = FakeUpstream(answer("shadow"))
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(shadow_config(primary.port, f"http://127.0.0.1:{shadow.port}", db, "aa_percent: 0",
                                   model_extra="set: { temperature: 0, max_tokens: 7, user: forced }"))
    body = (b'{"model":"demo","temperature":1.5,"messages":[{"role":"user","content":"hi",'
            b'"temperature":9}],"top_p":0.5}')
    st, _, resp = post(gw, body)
    assert st == 200, resp
    wait_until(lambda: got["shadow"], what="the shadow leg")
    up = json.loads(got["primary"][0])
    assert up["temperature"] == 0 and up["max_tokens"] == 7 and up["user"] == "forced", up
    assert up["top_p"] == 0.5 and up["messages"][0]["temperature"] == 9, up  # nested member untouched
    assert got["primary"][0].count(b'"temperature":') == 2  # the forced one and the nested one
    leg = json.loads(got["shadow"][0])
    assert leg["temperature"] == 0 and leg["max_tokens"] == 7 and leg["user"] == "forced", leg
    # a forced value is validated with the rest: the request still needs its model
    st, _, resp = post(gw, b'{"messages":[]}')
    assert st == 400 and json.loads(resp)["error"]["param"] == "model"
    c = settled(gw, 1)
    assert c["mirrored"] == 1, c
