"""Retries, the retry budget, Retry-After, fallbacks, and SSE keep-alive
comments while a stream waits for its first byte."""
import json
import time

from harness import (SLOW, FakeUpstream, chat, free_port, json_response, metrics, open_request,
                     parse_responses, post, read_all, sse_events, stream_text)


CLOSE = b"Connection: close\r\n"
EXPOSE = "  expose_backend_header: true\n"  # tests read x-shade-backend


def model_block(name, *ports, extra=""):
    out = [f"  - name: {name}"]
    out += ["    " + l for l in extra.strip().splitlines()] if extra.strip() else []
    out.append("    backends:")
    for i, p in enumerate(ports):
        out += [f"      - url: http://127.0.0.1:{p}", f"        name: {name}-{i}"]
    return "\n".join(out) + "\n"


def config(*models, server_extra=""):
    return ("server:\n  listen: 127.0.0.1:{PORT}\n  workers: 1\n  log_level: warn\n" + server_extra +
            "models:\n" + "".join(models))


def test_5xx_retried_on_another_backend(env):
    bad = env.sim("--error-rate", 1)
    good = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(config(model_block("demo", bad, good), server_extra=EXPOSE))
    for _ in range(10):
        st, h, body = post(gw, chat())
        assert st == 200, body
        assert h["x-shade-backend"] == "demo-1"
    m = metrics(gw)
    assert m['shade_upstream_errors_total{model="demo",backend="demo-0",kind="5xx"}'] >= 4
    assert m['shade_retries_total{model="demo"}'] >= 4


def test_attempt_limit(env):
    bad = [env.sim("--error-rate", 1) for _ in range(4)]
    gw = env.gateway(config(model_block("demo", *bad, extra="retry: {attempts: 2, budget_percent: 100}")))
    for _ in range(5):
        st, _, body = post(gw, chat())
        assert st == 500 and json.loads(body)["error"]
    m = metrics(gw)
    errors = sum(v for k, v in m.items() if k.startswith("shade_upstream_errors_total") and 'kind="5xx"' in k)
    assert errors == 10, m  # exactly two attempts per request
    assert m['shade_retries_total{model="demo"}'] == 5


def test_retry_budget_holds_in_a_429_storm(env):
    a = env.sim("--rate-limit-rate", 1)
    b = env.sim("--rate-limit-rate", 1)
    gw = env.gateway(config(model_block("demo", a, b, extra="retry: {budget_percent: 20, retry_after_max: 0s}")))
    n = 150
    for _ in range(n):
        st, _, _ = post(gw, chat())
        assert st == 429
    m = metrics(gw)
    retries = m['shade_retries_total{model="demo"}']
    # the budget: 20 % of requests plus the 10 a worker starts with
    assert retries <= 0.2 * n + 10 + 1, retries
    assert retries >= 0.2 * n - 1, retries
    assert m['shade_retries_denied_total{model="demo"}'] >= n - retries - 1


def test_retry_after_honoured_on_the_only_backend(env):
    calls = []

    def respond(req):
        calls.append(time.time())
        if len(calls) == 1:
            return [b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                    b"content-length: 2\r\n\r\n{}"]
        return json_response({"ok": True})

    up = FakeUpstream(respond)
    gw = env.gateway(config(model_block("demo", up.port)))
    t0 = time.time()
    st, _, body = post(gw, chat())
    assert st == 200 and json.loads(body) == {"ok": True}
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.95, calls
    assert time.time() - t0 >= 0.95
    # a pause longer than retry_after_max is not waited for: the 429 goes to the client
    calls.clear()
    gw2 = env.gateway(config(model_block("demo", up.port, extra="retry: {retry_after_max: 500ms}")))
    st, h, _ = post(gw2, chat())
    assert st == 429 and h["retry-after"] == "1" and len(calls) == 1


def test_fallback_model(env):
    up = FakeUpstream(lambda req: json_response({"served": True}))
    dead = free_port()
    gw = env.gateway(config(model_block("big", dead, extra="fallback: [small]"), model_block("small", up.port)))
    st, h, body = post(gw, chat(model="big"))
    assert st == 200, body
    assert h["x-shade-fallback"] == "small"
    sent = up.requests[0].partition(b"\r\n\r\n")[2]
    assert json.loads(sent)["model"] == "small"
    # once the backend is marked down the pool is exhausted at once: fallback again
    st, h, _ = post(gw, chat(model="big"))
    assert st == 200 and h["x-shade-fallback"] == "small"
    m = metrics(gw)
    assert m['shade_fallbacks_total{model="big",to="small"}'] == 2
    assert m['shade_requests_total{model="small",variant="fallback",backend="small-0",code="200",class="2xx"}'] == 2


def test_first_byte_timeout_retried_only_when_configured(env):
    hang = env.sim("--hang-rate", 1)
    good = env.sim("--ttft-ms", 0, "--tps", 0)
    backend_to = "first_byte_timeout: 300ms"
    cfg = config(model_block("demo", hang, good)).replace(
        f"url: http://127.0.0.1:{hang}\n", f"url: http://127.0.0.1:{hang}\n        {backend_to}\n")
    gw = env.gateway(cfg)
    codes = [post(gw, chat())[0] for _ in range(4)]
    assert 504 in codes and 200 in codes, codes
    gw2 = env.gateway(cfg.replace("    backends:", "    retry: {on_timeout: true}\n    backends:", 1))
    codes = [post(gw2, chat())[0] for _ in range(4)]
    assert codes == [200] * 4, codes


def test_stream_keepalive_comments_before_first_token(env):
    slow = env.sim("--ttft-ms", 1200, "--tps", 1000, "--max-tokens", 5)
    gw = env.gateway(config(model_block("demo", slow, extra="stream_keepalive: 300ms")))
    out = read_all(open_request(gw, chat(stream=True), extra=CLOSE), timeout=10)
    r = parse_responses(out)
    assert r[0][0] == 200
    body = r[0][2]
    assert body.startswith(b": keep-alive\n\n"), body[:80]
    assert body.count(b": keep-alive") >= 2
    assert sse_events(body)[-1] == "[DONE]"
    assert len(stream_text(body).split()) == 5
    # without keep-alive comments the bytes are the upstream's own
    gw2 = env.gateway(config(model_block("demo", slow, extra="stream_keepalive: 0s")))
    body2 = parse_responses(read_all(open_request(gw2, chat(stream=True), extra=CLOSE), timeout=10))[0][2]
    assert b"keep-alive" not in body2 and stream_text(body2) == stream_text(body)


def test_committed_stream_reports_failure_in_band(env):
    hang = env.sim("--hang-rate", 1)
    cfg = config(model_block("demo", hang, extra="stream_keepalive: 200ms")).replace(
        f"url: http://127.0.0.1:{hang}\n", f"url: http://127.0.0.1:{hang}\n        first_byte_timeout: 700ms\n")
    gw = env.gateway(cfg)
    out = read_all(open_request(gw, chat(stream=True), extra=CLOSE), timeout=10)
    assert out.endswith(b"0\r\n\r\n"), "the committed stream must end properly"
    r = parse_responses(out)
    assert r[0][0] == 200
    evs = sse_events(r[0][2])
    err = json.loads(evs[-1])["error"]
    assert err["code"] == "upstream_timeout", evs
    m = metrics(gw)
    assert m['shade_requests_total{model="demo",variant="primary",backend="demo-0",code="504",class="5xx"}'] == 1


def test_backend_killed_under_load(env):
    import concurrent.futures
    import signal
    a = env.sim("--ttft-ms", 2, "--tps", 0)
    b_port = free_port()
    env.sim("--ttft-ms", 2, "--tps", 0, port=b_port)
    b_proc = env.procs[-1]
    gw = env.gateway(config(model_block("demo", a, b_port), server_extra=EXPOSE).replace(
        "    backends:", "    retry: {budget_percent: 100}\n    backends:", 1).replace(
        f"url: http://127.0.0.1:{b_port}\n", f"url: http://127.0.0.1:{b_port}\n        fail_timeout: 500ms\n"))
    codes = []

    def client(i):
        out = []
        deadline = time.time() + 1.5 * SLOW
        while time.time() < deadline:
            out.append(post(gw, chat(f"load {i}"))[0])
        return out

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(client, i) for i in range(4)]
        time.sleep(0.5)
        b_proc.stop(signal.SIGKILL)  # the backend vanishes mid-load
        env.expect_exit[b_proc.pid] = -9
        for f in futs:
            codes += f.result()
    assert codes == [200] * len(codes), {c: codes.count(c) for c in set(codes)}
    m = metrics(gw)
    failed = sum(v for k, v in m.items() if k.startswith('shade_upstream_errors_total{model="demo",backend="demo-1"'))
    assert failed >= 1, "the kill was not seen"
    assert m['shade_retries_total{model="demo"}'] >= 1
    # it comes back: traffic reaches it again once fail_timeout has passed
    env.sim("--ttft-ms", 2, "--tps", 0, port=b_port)
    time.sleep(0.6)
    seen = {post(gw, chat())[1]["x-shade-backend"] for _ in range(10)}
    assert "demo-1" in seen, seen
