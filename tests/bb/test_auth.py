"""API keys and lockout (auth:): keys from the environment, per-key models,
the client's key never sent upstream, lockout per client address with
trusted proxies, the key in the access log — against the real binary."""
import json
import os
import subprocess
import time

import harness
from harness import chat, json_response, metrics, post, request, FakeUpstream

os.environ["SHADE_TEST_KEY_A"] = "sk-team-a-0123456789"
os.environ["SHADE_TEST_KEY_B"] = "sk-team-b-9876543210"

OK = json_response({"id": "x", "object": "chat.completion", "model": "demo",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


def auth_config(up_port, other_port, extra="", backend_extra="", log=None):
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 1", "  log_level: warn",
             "models:",
             "  - name: demo", "    backends:", f"      - url: http://127.0.0.1:{up_port}"]
    lines += ["        " + l for l in backend_extra.strip().splitlines()] if backend_extra.strip() else []
    lines += ["  - name: other", "    backends:", f"      - url: http://127.0.0.1:{other_port}",
              "auth:", "  keys:",
              "    - { name: team-a, key_env: SHADE_TEST_KEY_A }",
              "    - { name: team-b, key_env: SHADE_TEST_KEY_B, models: [demo] }"]
    lines += ["  " + l for l in extra.strip().splitlines()] if extra.strip() else []
    if log:
        lines += ["access_log:", f"  path: {log}", "  flush: 100ms"]
    return "\n".join(lines) + "\n"


def err(data):
    return json.loads(data)["error"]


def test_keys_models_and_errors(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    gw = env.gateway(auth_config(up.port, other.port))
    st, _, data = post(gw, chat())
    assert st == 401 and err(data)["code"] == "invalid_api_key", data
    # the key is checked before the body says anything back: no model
    # names, no parse errors for a client without a key
    st, _, data = post(gw, chat(model="no-such-model"))
    assert st == 401 and err(data)["code"] == "invalid_api_key", data
    st, _, data = post(gw, "{not json", headers={"authorization": "Bearer sk-wrong"})
    assert st == 401 and err(data)["code"] == "invalid_api_key", data
    st, _, data = post(gw, chat(model="no-such-model"), headers={"x-api-key": "sk-team-a-0123456789"})
    assert st == 404 and err(data)["code"] == "model_not_found", data
    st, _, data = post(gw, chat(), headers={"authorization": "Bearer sk-wrong"})
    assert st == 401 and err(data)["code"] == "invalid_api_key" and err(data)["type"] == "invalid_request_error"
    for h in ({"authorization": "Bearer sk-team-a-0123456789"}, {"api-key": "sk-team-a-0123456789"},
              {"x-api-key": "sk-team-a-0123456789"}):
        st, _, data = post(gw, chat(), headers=h)
        assert st == 200, (h, data)
    # team-b may use demo only
    b = {"authorization": "Bearer sk-team-b-9876543210"}
    assert post(gw, chat(), headers=b)[0] == 200
    st, _, data = post(gw, chat(model="other"), headers=b)
    assert st == 403 and err(data)["code"] == "model_not_allowed" and "team-b" in err(data)["message"], data
    assert post(gw, chat(model="other"), headers={"x-api-key": "sk-team-a-0123456789"})[0] == 200
    m = metrics(gw)
    assert m['shade_auth_failures_total{reason="missing"}'] == 2
    assert m['shade_auth_failures_total{reason="invalid"}'] == 2
    assert m['shade_auth_failures_total{reason="model"}'] == 1
    # the client's key never went upstream, in any header
    for req in up.requests + other.requests:
        low = req.lower()
        assert b"sk-team" not in low and b"authorization:" not in low and b"api-key:" not in low, req


def test_pass_client_key_and_backend_key(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    gw = env.gateway(auth_config(up.port, other.port, backend_extra="pass_client_key: true"))
    assert post(gw, chat(), headers={"authorization": "Bearer sk-team-a-0123456789"})[0] == 200
    assert b"authorization: Bearer sk-team-a-0123456789" in up.requests[-1], up.requests[-1]
    assert post(gw, chat(model="other"), headers={"authorization": "Bearer sk-team-a-0123456789"})[0] == 200
    assert b"sk-team" not in other.requests[-1]


def test_lockout_grows_and_a_success_does_not_clear_it(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    gw = env.gateway(auth_config(up.port, other.port,
                                 "lockout_failures: 3\nlockout_window: 60s\nlockout_ban: 1s\nlockout_ban_max: 1h"))
    good = {"authorization": "Bearer sk-team-a-0123456789"}
    bad = {"authorization": "Bearer sk-guess"}
    assert post(gw, chat(), headers=bad)[0] == 401
    assert post(gw, chat(), headers=good)[0] == 200  # a success does not clear the count
    assert post(gw, chat(), headers=bad)[0] == 401
    assert post(gw, chat(), headers=bad)[0] == 401  # the third failure: banned
    st, h, data = post(gw, chat(), headers=good)  # even with the right key
    assert st == 429 and err(data)["code"] == "too_many_auth_failures" and h["retry-after"] == "1", (st, h, data)
    time.sleep(1.2)
    assert post(gw, chat(), headers=good)[0] == 200
    for _ in range(3):
        assert post(gw, chat(), headers=bad)[0] == 401
    st, h, _ = post(gw, chat(), headers=good)
    assert st == 429 and h["retry-after"] == "2", h  # the second ban lasts twice as long
    m = metrics(gw)
    assert m["shade_auth_lockouts_total"] == 2 and m["shade_auth_locked_out_total"] == 2


def test_trusted_proxy_forwarded_for(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    gw = env.gateway(auth_config(up.port, other.port, "lockout_failures: 2\nlockout_ban: 60s\n"
                                 "trusted_proxies: [127.0.0.1, 10.9.0.0/16]"))
    good = {"authorization": "Bearer sk-team-a-0123456789"}

    def hdr(chain, key="sk-guess"):
        return {"authorization": f"Bearer {key}", "x-forwarded-for": chain}

    # 10.9.1.1 is a trusted proxy too: the client is the address before it
    assert post(gw, chat(), headers=hdr("203.0.113.7, 10.9.1.1"))[0] == 401
    assert post(gw, chat(), headers=hdr("203.0.113.7"))[0] == 401
    assert post(gw, chat(), headers=hdr("203.0.113.7", "sk-team-a-0123456789"))[0] == 429
    # another client behind the same proxies is not banned, nor the proxy itself
    assert post(gw, chat(), headers=hdr("198.51.100.4", "sk-team-a-0123456789"))[0] == 200
    assert post(gw, chat(), headers=good)[0] == 200
    # a client cannot dodge the ban by prepending addresses: the nearest untrusted one counts
    assert post(gw, chat(), headers=hdr("1.2.3.4, 203.0.113.7", "sk-team-a-0123456789"))[0] == 429


def test_untrusted_peer_forwarded_for_is_ignored(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    gw = env.gateway(auth_config(up.port, other.port, "lockout_failures: 2\nlockout_ban: 60s"))
    # no trusted proxies: X-Forwarded-For is the client's word, not believed
    assert post(gw, chat(), headers={"authorization": "Bearer x", "x-forwarded-for": "203.0.113.1"})[0] == 401
    assert post(gw, chat(), headers={"authorization": "Bearer x", "x-forwarded-for": "203.0.113.2"})[0] == 401
    st, _, _ = post(gw, chat(), headers={"authorization": "Bearer sk-team-a-0123456789",
                                         "x-forwarded-for": "203.0.113.3"})
    assert st == 429


def test_key_in_access_log(env):
    up = FakeUpstream(lambda req: OK)
    other = FakeUpstream(lambda req: OK)
    log = os.path.join(env.tmp, "access.log")
    gw = env.gateway(auth_config(up.port, other.port, log=log))
    assert post(gw, chat(), headers={"authorization": "Bearer sk-team-b-9876543210"})[0] == 200
    assert post(gw, chat())[0] == 401
    deadline = time.time() + 5
    lines = []
    while time.time() < deadline:
        if os.path.exists(log):
            with open(log) as f:
                lines = [x for x in (json.loads(l) for l in f if l.strip()) if x["path"] == "/v1/chat/completions"]
            if len(lines) >= 2:
                break
        time.sleep(0.05)
    assert [x["key"] for x in lines] == ["team-b", None], lines
    assert "sk-team" not in open(log).read()


def test_config_errors(env):
    path = os.path.join(env.tmp, "bad.yaml")
    cfg = auth_config(1, 2).replace("SHADE_TEST_KEY_B", "SHADE_TEST_KEY_UNSET_ZZ")
    with open(path, "w") as f:
        f.write(cfg.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode != 0 and "SHADE_TEST_KEY_UNSET_ZZ is not set or empty" in p.stderr, p.stderr
    cfg = auth_config(1, 2).replace("SHADE_TEST_KEY_B", "SHADE_TEST_KEY_A")
    with open(path, "w") as f:
        f.write(cfg.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode != 0 and 'keys "team-a" and "team-b" have the same secret' in p.stderr, p.stderr
    cfg = auth_config(1, 2, "trusted_proxies: [10.0.0.0/33]")
    with open(path, "w") as f:
        f.write(cfg.replace("{PORT}", "1"))
    p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
    assert p.returncode != 0 and "not an address or CIDR: 10.0.0.0/33" in p.stderr, p.stderr


def test_check_warns_about_an_open_listener(env):
    path = os.path.join(env.tmp, "open.yaml")
    base = 'models:\n  - name: demo\n    backends: [{ url: "http://127.0.0.1:1" }]\n'
    cases = [("server:\n  listen: 0.0.0.0:8080\n" + base, True),
             ("server:\n  listen: 127.0.0.1:8080\n" + base, False),
             ("server:\n  listen: \"[::1]:8080\"\n" + base, False),
             (auth_config(1, 2).replace("127.0.0.1:{PORT}", "0.0.0.0:8080"), False)]
    for text, warned in cases:
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([harness.BIN, "check", "-c", path], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert ("no API key is required" in p.stderr) == warned, (text, p.stderr)
