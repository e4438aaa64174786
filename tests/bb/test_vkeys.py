"""Virtual keys (auth.virtual_keys): created, used, rotated, revoked and
expired through the admin API and `shade keys`, seen by every worker and
by the running gateway when another process writes the store, the spend
ledger and usage endpoint, the per-key metrics, and the errors — against
the real binary and the simulator."""
import json
import os
import subprocess
import time

import harness
from harness import chat, metrics, post, request

ADMIN = "adm-secret-0123"
os.environ["SHADE_TEST_VK_ADMIN"] = ADMIN
os.environ["SHADE_TEST_VK_CFG"] = "sk-config-key-abcdef"
A = {"x-shade-admin-key": ADMIN}


def vk_config(env, sim, extra_auth="", log=None):
    db = os.path.join(env.tmp, "store.db")
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 2", "  log_level: info",
             "models:",
             "  - name: demo", "    price: { input: 1000, output: 2000 }",
             "    backends:", f"      - url: http://127.0.0.1:{sim}",
             "  - name: other", "    backends:", f"      - url: http://127.0.0.1:{sim}",
             "auth:", "  virtual_keys: true", "  lockout_failures: 0"]
    lines += ["  " + l for l in extra_auth.strip().splitlines()] if extra_auth.strip() else []
    lines += ["admin:", "  key_env: SHADE_TEST_VK_ADMIN", "shadow_store:", f"  path: {db}"]
    if log:
        lines += ["access_log:", f"  path: {log}", "  flush: 100ms"]
    return "\n".join(lines) + "\n", db


def err(data):
    return json.loads(data)["error"]


def create(gw, body, headers=A):
    st, _, data = request(gw, "POST", "/admin/keys", body, headers=headers)
    return st, json.loads(data)


def use(gw, key, model="demo"):
    return post(gw, chat(model=model, max_tokens=8), headers={"authorization": f"Bearer {key}"})[0]


def until(fn, want, timeout):
    """Poll fn() until it returns want (or timeout seconds): (elapsed, last)."""
    t0 = time.time()
    last = fn()
    while last != want and time.time() - t0 < timeout * harness.SLOW:
        time.sleep(0.02)
        last = fn()
    return time.time() - t0, last


def all_workers(gw, key, n=12):
    """The status of n requests on n fresh connections (spread over the
    workers by SO_REUSEPORT): one status when they all agree."""
    seen = {use(gw, key) for _ in range(n)}
    return seen.pop() if len(seen) == 1 else tuple(sorted(seen))


def cli(*args, env_extra=None):
    e = dict(os.environ)
    if env_extra:
        e.update(env_extra)
    return subprocess.run([harness.BIN, "keys", *args], capture_output=True, text=True, timeout=30 * harness.SLOW,
                          env=e)


def test_lifecycle_create_rotate_revoke(env):
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, _ = vk_config(env, sim)
    gw = env.gateway(text)
    # the admin API needs the admin key
    st, _, data = request(gw, "POST", "/admin/keys", {"name": "team-a"})
    assert st == 401 and err(data)["code"] == "admin_key_required", data
    st, k = create(gw, {"name": "team-a", "models": ["demo"], "limits": {"rpm": 1000},
                        "metadata": {"owner": "ops"}})
    assert st == 201, k
    secret, kid = k["key"], k["id"]
    assert secret.startswith("sk-shade-") and len(secret) == 41 and k["prefix"] == secret[:12], k
    assert kid.startswith("key_") and len(kid) == 16 and k["state"] == "active", k
    assert k["models"] == ["demo"] and k["limits"]["rpm"] == 1000 and k["metadata"] == {"owner": "ops"}, k
    # usable at once, on every worker
    assert all_workers(gw, secret) == 200
    assert use(gw, secret, "other") == 403
    st, _, data = post(gw, chat(model="other"), headers={"authorization": f"Bearer {secret}"})
    assert err(data)["code"] == "model_not_allowed" and "team-a" in err(data)["message"], data
    assert use(gw, "sk-shade-" + "x" * 32) == 401
    # the secret is never shown again
    for path in ("/admin/keys", f"/admin/keys/{kid}", f"/admin/keys/{kid}/usage", "/metrics"):
        st, _, data = request(gw, "GET", path, headers=A)
        assert st == 200 and secret[9:].encode() not in data and b'"key":' not in data.replace(b'{key=', b''), \
            (path, data)
    st, _, data = request(gw, "GET", f"/admin/keys/{kid}", headers=A)
    shown = json.loads(data)
    assert shown["id"] == kid and shown["prefix"] == secret[:12] and "key" not in shown and "digest" not in shown
    # a second live key with the same name is refused
    st, body = create(gw, {"name": "team-a"})
    assert st == 409 and body["error"]["code"] == "key_name_taken", body
    # rotate: the old secret stops, the new one works, same id and limits
    st, _, data = request(gw, "POST", f"/admin/keys/{kid}/rotate", headers=A)
    assert st == 200, data
    rot = json.loads(data)
    new = rot["key"]
    assert rot["id"] == kid and new != secret and rot["rotated_from"] == secret[:12] and rot["limits"]["rpm"] == 1000
    assert all_workers(gw, secret) == 401
    assert all_workers(gw, new) == 200
    # revoke: refused on both workers within a second
    st, _, data = request(gw, "POST", f"/admin/keys/{kid}/revoke", headers=A)
    assert st == 200 and json.loads(data)["state"] == "revoked", data
    t, last = until(lambda: all_workers(gw, new), 401, 1.0)
    assert last == 401 and t < 1.0 * harness.SLOW, (t, last)
    st, _, data = request(gw, "POST", f"/admin/keys/{kid}/rotate", headers=A)
    assert st == 409 and err(data)["code"] == "key_revoked", data
    # DELETE revokes too (again: nothing changes); an unknown id is 404
    assert request(gw, "DELETE", f"/admin/keys/{kid}", headers=A)[0] == 200
    st, _, data = request(gw, "GET", "/admin/keys/key_nosuchkey0000", headers=A)
    assert st == 404 and err(data)["code"] == "key_not_found", data
    st, _, data = request(gw, "GET", "/admin/keys", headers=A)
    assert [x["state"] for x in json.loads(data)["data"]] == ["revoked"], data
    # the name is free again once the key is revoked
    assert create(gw, {"name": "team-a"})[0] == 201
    m = metrics(gw)
    assert m["shade_keys_live"] == 1, m
    # nothing the gateway logged holds a secret
    out = env.last_gateway.output()
    assert secret[9:] not in out and new[9:] not in out, out


def test_cli_and_the_running_gateway(env):
    """`shade keys` writes the store directly; the gateway sees it within 1 s."""
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, db = vk_config(env, sim)
    gw = env.gateway(text)
    cfg = os.path.join(env.tmp, f"gw{gw}.yaml")
    p = cli("create", "-c", cfg, "--name", "batch", "--models", "demo,other", "--rpm", "600",
            "--budget-usd", "10", "--period", "week", "--json")
    assert p.returncode == 0, p.stderr
    k = json.loads(p.stdout)
    assert k["budget"] == {"usd": 10, "soft_usd": 0, "period": "week"} and k["models"] == ["demo", "other"], k
    t, last = until(lambda: all_workers(gw, k["key"], 6), 200, 1.0)
    assert last == 200 and t < 1.0 * harness.SLOW, (t, last)
    # text output: the secret once, with a warning
    p = cli("create", "--db", db, "--name", "other-app", "--expires-in", "30d")
    assert p.returncode == 0 and "key:      sk-shade-" in p.stdout and "only this once" in p.stdout, p.stdout
    p = cli("list", "--db", db)
    assert p.returncode == 0 and "batch" in p.stdout and "other-app" in p.stdout and "sk-shade-" in p.stdout, p.stdout
    assert k["key"][12:] not in p.stdout  # the prefix only
    p = cli("list", "--db", db, "--json")
    assert [x["name"] for x in json.loads(p.stdout)["data"]] == ["batch", "other-app"]
    # the admin API lists what the CLI made
    st, _, data = request(gw, "GET", "/admin/keys", headers=A)
    assert [x["name"] for x in json.loads(data)["data"]] == ["batch", "other-app"]
    # rotate and revoke from the CLI: seen by the gateway within a second
    p = cli("rotate", k["id"], "--db", db, "--json")
    assert p.returncode == 0, p.stderr
    new = json.loads(p.stdout)["key"]
    t, last = until(lambda: (all_workers(gw, k["key"], 6), all_workers(gw, new, 6)), (401, 200), 1.0)
    assert last == (401, 200) and t < 1.0 * harness.SLOW, (t, last)
    p = cli("revoke", k["id"], "--db", db)
    assert p.returncode == 0 and "revoked" in p.stdout, p.stdout
    t, last = until(lambda: all_workers(gw, new, 6), 401, 1.0)
    assert last == 401 and t < 1.0 * harness.SLOW, (t, last)
    # errors
    p = cli("revoke", "key_nosuchkey0000", "--db", db)
    assert p.returncode == 1 and "no key has the id" in p.stderr
    p = cli("create", "--db", db, "--name", "x", "--rpm", "lots")
    assert p.returncode == 2 and "--rpm: expected an integer" in p.stderr
    p = cli("create", "--db", db, "--name", "x", "--period", "year")
    assert p.returncode == 2 and "budget.period" in p.stderr
    p = cli("create", "--name", "x")
    assert p.returncode == 2 and "missing -c FILE or --db FILE" in p.stderr
    for cmd in ("create", "list", "usage", "rotate"):
        p = cli(cmd, "--help")
        assert p.returncode == 0 and p.stdout.startswith("usage: shade keys"), (cmd, p.stdout)
    p = cli("--help")
    assert p.returncode == 0 and "create --name NAME" in p.stdout


def test_spend_ledger_usage_and_metrics(env):
    sim = env.sim("--tps", "0", "--ttft-ms", "1", "--max-tokens", "10")
    log = os.path.join(env.tmp, "access.log")
    text, db = vk_config(env, sim, extra_auth="keys:\n  - { name: cfgkey, key_env: SHADE_TEST_VK_CFG, metrics: true }",
                         log=log)
    gw = env.gateway(text)
    st, k = create(gw, {"name": "spender", "metrics": True, "budget": {"usd": 100, "period": "month"}})
    assert st == 201, k
    n = 5
    for _ in range(n):
        st, _, data = post(gw, chat(max_tokens=10), headers={"authorization": f"Bearer {k['key']}"})
        assert st == 200, data
    st, _, data = post(gw, chat(stream=True, max_tokens=10), headers={"authorization": f"Bearer {k['key']}"})
    assert st == 200
    assert use(gw, os.environ["SHADE_TEST_VK_CFG"]) == 200

    def ledger():
        st, _, data = request(gw, "GET", f"/admin/keys/{k['id']}/usage", headers=A)
        assert st == 200, data
        return json.loads(data)

    t, _ = until(lambda: ledger()["total"]["requests"], n + 1, 5.0)
    u = ledger()
    assert u["total"]["requests"] == n + 1, u
    assert u["total"]["tokens_out"] > 0 and u["total"]["tokens_in"] > 0, u
    # the simulator reports usage; demo costs $1000 / $2000 per 1M tokens
    want = (u["total"]["tokens_in"] * 1000 + u["total"]["tokens_out"] * 2000) / 1e6
    assert abs(u["total"]["cost_usd"] - want) < 1e-9, (u, want)
    assert len(u["data"]) == 1 and u["data"][0]["model"] == "demo" and u["days"] == 30, u
    assert u["budget"]["period"] == "month" and abs(u["budget"]["spent_usd"] - want) < 1e-9, u
    st, _, data = request(gw, "GET", f"/admin/keys/{k['id']}/usage?days=0", headers=A)
    assert st == 400 and err(data)["param"] == "days", data
    # a config key's spend is in the ledger too
    until(lambda: request(gw, "GET", "/admin/keys/cfg:cfgkey/usage", headers=A)[2].count(b'"requests":1,'), 2, 5.0)
    st, _, data = request(gw, "GET", "/admin/keys/cfg:cfgkey/usage", headers=A)
    assert st == 200 and json.loads(data)["total"]["requests"] == 1, data
    # the per-key metrics (metrics: true), virtual and config keys
    m = metrics(gw)
    assert m['shade_key_requests_total{key="spender"}'] == n + 1, m
    assert m['shade_key_tokens_total{key="spender",kind="out"}'] == u["total"]["tokens_out"]
    assert abs(m['shade_key_spend_usd_total{key="spender"}'] - want) < 1e-6
    assert m['shade_key_requests_total{key="cfgkey"}'] == 1
    # the CLI reads the same ledger
    p = cli("usage", k["id"], "--db", db, "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["total"]["requests"] == n + 1, p.stdout + p.stderr
    # the access log names the key, never its secret
    deadline = time.time() + 5
    while time.time() < deadline and not (os.path.exists(log) and open(log).read().count('"spender"') >= n + 1):
        time.sleep(0.05)
    text_log = open(log).read()
    assert text_log.count('"key":"spender"') >= n + 1, text_log[-500:]
    assert k["key"][9:] not in text_log
    # the ledger survives the serving process: stopped here, read by the CLI
    env.last_gateway.stop()
    p = cli("usage", k["id"], "--db", db, "--json")
    assert json.loads(p.stdout)["total"]["requests"] == n + 1


def test_expiry(env):
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, _ = vk_config(env, sim)
    gw = env.gateway(text)
    st, k = create(gw, {"name": "short", "expires_in": "2s"})
    assert st == 201 and k["expires_at"] - k["created_at"] == 2, k
    at = time.time()
    assert use(gw, k["key"]) == 200
    time.sleep(max(0, k["expires_at"] + 0.3 - time.time()))
    st, _, data = post(gw, chat(), headers={"authorization": f"Bearer {k['key']}"})
    assert st == 401 and err(data)["code"] == "invalid_api_key", (st, data, time.time() - at)
    st, _, data = request(gw, "GET", f"/admin/keys/{k['id']}", headers=A)
    assert json.loads(data)["state"] == "expired"
    # dropped from the table at the next look (the gauge)
    t, last = until(lambda: metrics(gw)["shade_keys_live"], 0, 2.0)
    assert last == 0, last
    # an expired name is free again
    assert create(gw, {"name": "short", "expires_at": int(time.time()) + 3600})[0] == 201


def test_bad_requests(env):
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, _ = vk_config(env, sim, extra_auth="keys:\n  - { name: cfgkey, key_env: SHADE_TEST_VK_CFG }")
    gw = env.gateway(text)
    cases = [
        ("", "invalid_json", None),
        ("{not json", "invalid_json", None),
        ("[1]", "invalid_type", None),
        ({}, "missing_required_parameter", "name"),
        ({"name": ""}, "invalid_value", "name"),
        ({"name": "x" * 129}, "invalid_value", "name"),
        ({"name": 7}, "invalid_type", "name"),
        ({"name": "a\nb"}, "invalid_value", "name"),
        ({"name": "x", "nmae": 1}, "unknown_parameter", "nmae"),
        ('{"name":"x","name":"y"}', "duplicate_parameter", "name"),
        ({"name": "x", "models": "demo"}, "invalid_type", "models"),
        ({"name": "x", "models": ["demo", "demo"]}, "invalid_value", "models[1]"),
        ({"name": "x", "models": ["de mo"]}, "invalid_value", "models[0]"),
        ({"name": "x", "limits": {"rpm": -1}}, "invalid_value", "limits.rpm"),
        ({"name": "x", "limits": {"rpm": 1.5}}, "invalid_type", "limits.rpm"),
        ({"name": "x", "limits": {"rps": 1}}, "unknown_parameter", "limits.rps"),
        ({"name": "x", "limits": []}, "invalid_type", "limits"),
        ({"name": "x", "model_limits": [{"rpm": 1}]}, "missing_required_parameter", "model_limits[0].model"),
        ({"name": "x", "model_limits": [{"model": "demo"}, {"model": "demo"}]}, "invalid_value", "model_limits[1]"),
        ({"name": "x", "budget": {"usd": "5"}}, "invalid_type", "budget.usd"),
        ({"name": "x", "budget": {"usd": 5, "period": "year"}}, "invalid_value", "budget.period"),
        ({"name": "x", "budget": {"usd": 5, "soft_usd": 6}}, "invalid_value", "budget.soft_usd"),
        ({"name": "x", "expires_in": "30x"}, "invalid_value", "expires_in"),
        ({"name": "x", "expires_in": True}, "invalid_type", "expires_in"),
        ({"name": "x", "expires_at": 1000}, "invalid_value", "expires_at"),
        ({"name": "x", "expires_in": "1d", "expires_at": int(time.time()) + 10}, "invalid_value", "expires_at"),
        ({"name": "x", "priority": 10}, "invalid_value", "priority"),
        ({"name": "x", "metrics": "yes"}, "invalid_type", "metrics"),
        ({"name": "x", "metadata": [1]}, "invalid_type", "metadata"),
        ({"name": "x", "metadata": {"a": "b" * 5000}}, "invalid_value", "metadata"),
    ]
    for body, code, param in cases:
        st, h, data = request(gw, "POST", "/admin/keys", body, headers=A)
        e = err(data)
        assert st == 400 and e["code"] == code and e["param"] == param and e["type"] == "invalid_request_error", \
            (body, st, data)
        assert h["content-type"].startswith("application/json")
    st, _, data = request(gw, "POST", "/admin/keys", "name=x", headers={**A, "content-type": "text/plain"})
    assert st == 415 and err(data)["code"] == "unsupported_media_type", data
    st, _, data = request(gw, "POST", "/admin/keys", json.dumps({"name": "x", "metadata": {"a": "b" * 70000}}),
                          headers=A)
    assert st == 413 and "error" in json.loads(data), data
    st, _, data = request(gw, "POST", "/admin/keys", {"name": "cfgkey"}, headers=A)
    assert st == 409 and err(data)["code"] == "key_name_taken", data
    st, _, data = request(gw, "PUT", "/admin/keys", {"name": "x"}, headers=A)
    assert st == 405 and err(data)["code"] == "method_not_allowed", data
    st, _, data = request(gw, "GET", "/admin/keys/key_x/rotate", headers=A)
    assert st == 405, data
    st, _, data = request(gw, "POST", "/admin/keys/key_x/explode", headers=A)
    assert st == 404 and err(data)["code"] == "unknown_url", data
    st, _, data = request(gw, "GET", "/admin/keys", headers={"x-shade-admin-key": "wrong"})
    assert st == 401 and err(data)["code"] == "invalid_admin_key", data
    # nothing was created by any of it
    st, _, data = request(gw, "GET", "/admin/keys", headers=A)
    assert json.loads(data)["data"] == [], data


def test_off_by_default(env):
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, db = vk_config(env, sim, extra_auth="keys:\n  - { name: cfgkey, key_env: SHADE_TEST_VK_CFG }")
    text = text.replace("  virtual_keys: true\n", "")
    gw = env.gateway(text)
    # a key in the store is not accepted when virtual keys are off
    p = cli("create", "--db", db, "--name", "stored", "--json")
    assert p.returncode == 0, p.stderr
    time.sleep(0.5)
    assert use(gw, json.loads(p.stdout)["key"]) == 401
    assert use(gw, os.environ["SHADE_TEST_VK_CFG"]) == 200
    st, _, data = request(gw, "GET", "/admin/keys", headers=A)
    assert st == 404 and err(data)["code"] == "virtual_keys_off", data
    assert "shade_keys_live" not in metrics(gw)


def test_keys_kept_across_reload(env):
    """SIGHUP starts a new serving process: it reads the keys from the store,
    and the old one's ledger rows are written before it goes."""
    import signal
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, db = vk_config(env, sim)
    gw = env.gateway(text)
    st, k = create(gw, {"name": "steady"})
    assert st == 201
    for _ in range(3):
        assert use(gw, k["key"]) == 200
    master = env.last_gateway
    old = set(master.children())
    os.kill(master.pid, signal.SIGHUP)
    until(lambda: bool(set(master.children()) - old) and len(master.children()) == 1, True, 10.0)
    assert all_workers(gw, k["key"]) == 200
    for _ in range(2):
        assert use(gw, k["key"]) == 200

    def total():
        p = cli("usage", k["id"], "--db", db, "--json")
        return json.loads(p.stdout)["total"]["requests"]

    # 3 before, 12 + 2 after: every request counted once
    _, last = until(total, 17, 5.0)
    assert last == 17, last


def test_rollout_unit_key_survives_rotation(env):
    """A rollout with `unit: key` assigns a virtual key by its id: rotating
    the secret keeps the client on its arm."""
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    cand = env.sim("--tps", "0", "--ttft-ms", "1", "--seed", "7")
    text, _ = vk_config(env, sim)
    text = text.replace("  - name: other", f"  - name: demo-v2\n    backends:\n      - url: http://127.0.0.1:{cand}\n"
                        "  - name: other")
    text += ("rollouts:\n  - name: v2\n    model: demo\n    candidate: demo-v2\n    unit: key\n"
             "    variant_header: true\n    steps:\n      - { percent: 50, min_duration: 10m, min_requests: 100000 }\n")
    gw = env.gateway(text)
    keys = []
    for i in range(16):
        st, k = create(gw, {"name": f"unit-{i}"})
        assert st == 201, k
        keys.append((k["id"], k["key"]))

    def arm(secret):
        st, h, data = post(gw, chat(max_tokens=4), headers={"authorization": f"Bearer {secret}"})
        assert st == 200, data
        return h["x-shade-variant"]

    before = {kid: arm(s) for kid, s in keys}
    assert set(before.values()) == {"baseline", "canary"}, before  # 16 keys at 50 %: both arms
    for kid, s in keys:  # sticky for a key
        assert arm(s) == before[kid]
    after = {}
    for kid, _ in keys:
        st, _, data = request(gw, "POST", f"/admin/keys/{kid}/rotate", headers=A)
        assert st == 200, data
        after[kid] = arm(json.loads(data)["key"])
    assert after == before


def test_config_key_spend_without_virtual_keys(env):
    """Every key's spend goes to the ledger, virtual keys or not; with them
    off, only a config key's usage is answered by /admin/keys."""
    sim = env.sim("--tps", "0", "--ttft-ms", "1")
    text, db = vk_config(env, sim, extra_auth="keys:\n  - { name: cfgkey, key_env: SHADE_TEST_VK_CFG }")
    text = text.replace("  virtual_keys: true\n", "")
    gw = env.gateway(text)
    for _ in range(3):
        assert use(gw, os.environ["SHADE_TEST_VK_CFG"]) == 200

    def total():
        st, _, data = request(gw, "GET", "/admin/keys/cfg:cfgkey/usage", headers=A)
        assert st == 200, data
        return json.loads(data)["total"]["requests"]

    _, got = until(total, 3, 5.0)
    assert got == 3
    for path, method in (("/admin/keys", "GET"), ("/admin/keys/key_x", "GET"), ("/admin/keys/cfg:cfgkey/rotate", "POST")):
        st, _, data = request(gw, method, path, headers=A)
        assert st == 404 and err(data)["code"] == "virtual_keys_off", (path, data)
