"""Every error a client or an upstream can cause: the status and an
OpenAI-style error object, and the gateway keeps serving."""
import json

from harness import basic_config, chat, free_port, parse_responses, post, raw, request


def err_of(body):
    j = json.loads(body)
    e = j["error"]
    assert set(e) == {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"]
    return e


def test_client_errors(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    st, _, b = post(gw, b'{"model":"demo", "messages": [}')
    assert st == 400 and err_of(b)["type"] == "invalid_request_error"
    st, _, b = post(gw, b"")
    assert st == 400 and err_of(b)
    st, _, b = post(gw, b"[1,2]")
    assert st == 400 and err_of(b)
    st, _, b = post(gw, {"messages": []})
    assert st == 400 and err_of(b)["param"] == "model"
    st, _, b = post(gw, {"model": "demo"})
    e = err_of(b)
    assert st == 400 and e["param"] == "messages" and e["code"] == "missing_required_parameter"
    st, _, b = post(gw, {"model": "demo"}, path="/v1/embeddings")
    assert st == 400 and err_of(b)["param"] == "input"
    st, _, b = post(gw, {"model": "demo"}, path="/v1/completions")
    assert st == 400 and err_of(b)["param"] == "prompt"
    st, _, b = post(gw, {"model": 5, "messages": []})
    assert st == 400 and err_of(b)["param"] == "model"
    st, _, b = post(gw, {"model": "gpt-nope", "messages": []})
    e = err_of(b)
    assert st == 404 and e["code"] == "model_not_found" and "gpt-nope" in e["message"]
    st, _, b = request(gw, "GET", "/v1/chat/completions")
    assert st == 405 and err_of(b)
    st, _, b = request(gw, "GET", "/v1/nothing")
    assert st == 404 and err_of(b)
    # invalid UTF-8 is not JSON
    st, _, b = post(gw, b'{"model":"demo","messages":[{"role":"user","content":"\xff"}]}')
    assert st == 400 and err_of(b)
    # still serving
    assert post(gw, chat())[0] == 200


def test_limits_413_431(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1, server_extra="max_body_bytes: 2048\nmax_header_bytes: 4096"))
    st, h, b = post(gw, chat("x" * 5000))
    assert st == 413 and err_of(b) and h["connection"] == "close"
    # declared length too large: answered before the body is sent
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    r = parse_responses(out)
    assert r[0][0] == 413 and err_of(r[0][2])["code"] == "request_too_large"
    # chunked body growing past the limit
    chunk = b"a" * 1500
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 3)
    assert parse_responses(out)[0][0] == 413
    out = raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    r = parse_responses(out)
    assert r[0][0] == 431 and err_of(r[0][2])
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(150))
    assert parse_responses(raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))[0][0] == 431
    assert post(gw, chat())[0] == 200


def test_smuggling_shapes_rejected(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    bad = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ]
    for b in bad:
        out = raw(gw, b)
        r = parse_responses(out)
        assert len(r) == 1 and r[0][0] == 400, (b, out[:300])
        assert r[0][1]["connection"] == "close"
        err_of(r[0][2])
    assert post(gw, chat())[0] == 200


def test_upstream_errors_passed_through(env):
    e500 = env.sim("--error-rate", 1)
    e429 = env.sim("--rate-limit-rate", 1)
    cfg = basic_config(e500, extra_model=f"  - name: limited\n    backends:\n      - url: http://127.0.0.1:{e429}\n")
    gw = env.gateway(cfg)
    st, _, b = post(gw, chat())
    assert st == 500 and err_of(b)
    st, h, b = post(gw, chat(model="limited"))
    assert st == 429 and err_of(b) and h.get("retry-after") == "1"


def test_unreachable_502_then_503(env):
    dead = free_port()
    gw = env.gateway(basic_config(dead))
    st, h, b = post(gw, chat())
    e = err_of(b)
    assert st == 502 and e["type"] == "server_error" and e["code"] == "upstream_unreachable", b
    assert h["x-request-id"]
    # the backend is now marked down for fail_timeout: no healthy backend
    st, _, b = post(gw, chat())
    assert st == 503 and err_of(b)["code"] == "no_healthy_backend"
    assert request(gw, "GET", "/readyz")[0] == 503
    assert request(gw, "GET", "/healthz")[0] == 200


def test_upstream_timeout_504(env):
    hang = env.sim("--hang-rate", 1)
    gw = env.gateway(basic_config(hang, backend_extra="first_byte_timeout: 300ms"))
    st, _, b = post(gw, chat())
    e = err_of(b)
    assert st == 504 and e["code"] == "upstream_timeout", b


def test_header_timeout_408(env):
    s1 = env.sim()
    gw = env.gateway(basic_config(s1, server_extra="header_timeout: 300ms"))
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", timeout=3)
    r = parse_responses(out)
    assert r[0][0] == 408 and err_of(r[0][2])["code"] == "request_timeout"


def test_folded_headers_rejected_absolute_form_served(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    r = parse_responses(raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n"))
    assert r[0][0] == 400 and err_of(r[0][2])
    b = json.dumps(chat()).encode()
    r = parse_responses(raw(gw, b"POST http://gateway.example/v1/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(b), b)))
    assert r[0][0] == 200, r


B60 = b'{"model":"demo","messages":[{"role":"user","content":"hi"}]}'
POST_CHUNKED = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_issue9_framing(env):
    """The reproductions of issue 9 items 1-5 against the real binary: each
    answered once, with the right status, and the connection closed; nothing
    smuggled behind it is ever served."""
    assert len(B60) == 0x3c
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))

    def one(data, status):
        out = raw(gw, data)
        r = parse_responses(out)
        assert len(r) == 1 and r[0][0] == status, (data, out[:400])
        assert r[0][1]["connection"] == "close", r[0][1]
        assert b'"object":"list"' not in out  # the smuggled /v1/models never answered
        err_of(r[0][2])
        return err_of(r[0][2])

    # 1. a bare CR inside the head
    e = one(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\rXGET /v1/models HTTP/1.1\r\nHost: y\r\n\r\n", 400)
    assert "CR" in e["message"] or "header" in e["message"], e
    one(b"GET /healthz HTTP/1.1\r\nHost: x\rXGET /v1/models HTTP/1.1\r\nHost: y\r\n\r\n", 400)
    # 2. chunk data not followed by CRLF
    e = one(POST_CHUNKED + b"3c\r\n" + B60 + b"XX0\r\n\r\n", 400)
    assert "CRLF" in e["message"], e
    # 3. chunk extensions, quoted or not, are accepted
    for ext in (b";a=1;b=2", b';a="1";b=2', b" ; a = 1 ;flag"):
        out = raw(gw, POST_CHUNKED + b"3c" + ext + b"\r\n" + B60 + b"\r\n0\r\n\r\n")
        r = parse_responses(out)
        assert len(r) == 1 and r[0][0] == 200, (ext, out[:300])
    # 4. Host: missing in HTTP/1.1, or twice
    one(b"GET /healthz HTTP/1.1\r\n\r\n", 400)
    one(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)
    assert parse_responses(raw(gw, b"GET /healthz HTTP/1.0\r\n\r\n"))[0][0] == 200
    # 5. a transfer coding shade does not decode
    e = one(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"3c\r\n" + B60 + b"\r\n0\r\n\r\n", 501)
    assert e["type"] == "server_error" or e["type"] == "invalid_request_error"
    # pipelined requests with LF-only line ends and empty lines between still work
    out = raw(gw, b"GET /healthz HTTP/1.1\nHost: x\n\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r[0] for r in parse_responses(out)] == [200, 200]
    assert post(gw, chat())[0] == 200


def test_duplicate_interpreted_keys_rejected(env):
    """A second copy of a member shade reads (however it is escaped) is a
    400: an upstream that keeps the first copy would otherwise serve a model,
    a stream mode or a prompt the gateway never routed, limited or billed."""
    from harness import canned, json_response
    up = canned(json_response(b'{"ok":true}'))
    gw = env.gateway(basic_config(up.port, backend_extra="model: upstream-name",
                                  extra_model="  - name: gpt-4-expensive\n    backends:\n"
                                              f"      - url: http://127.0.0.1:{up.port}\n"))
    msgs = '"messages":[{"role":"user","content":"hi"}]'
    cases = [
        ('{"model":"gpt-4-expensive","model":"demo",%s}' % msgs, "model"),
        ('{"model":"gpt-4-expensive",%s,"mod\\u0065l":"demo"}' % msgs, "model"),
        ('{"model":"demo",%s,"stream":false,"stream":true}' % msgs, "stream"),
        ('{"model":"demo",%s,%s}' % (msgs, msgs), "messages"),
        ('{"model":"demo",%s,"user":"a","user":"b"}' % msgs, "user"),
        ('{"model":"demo",%s,"max_tokens":1,"max_tokens":100000}' % msgs, "max_tokens"),
        ('{"model":"demo",%s,"n":1,"n":128}' % msgs, "n"),
        ('{"model":"demo",%s,"stream_options":{},"stream_options":{"include_usage":true}}' % msgs,
         "stream_options"),
    ]
    for body, key in cases:
        st, _, b = post(gw, body.encode())
        e = err_of(b)
        assert st == 400 and e["type"] == "invalid_request_error", (body, st, b)
        assert e["param"] == key and e["code"] == "duplicate_parameter" and key in e["message"], (body, e)
    for body, key in (('{"model":"demo","prompt":"a","prompt":"b"}', "prompt"),):
        st, _, b = post(gw, body.encode(), path="/v1/completions")
        assert st == 400 and err_of(b)["param"] == key
    st, _, b = post(gw, b'{"model":"demo","input":"a","input":["b"]}', path="/v1/embeddings")
    assert st == 400 and err_of(b)["param"] == "input"
    assert up.requests == [], "a refused body must not reach an upstream"
    # duplicates below the top level, and of members shade does not read,
    # are the client's business: forwarded byte for byte, only the routed
    # model value spliced
    body = ('{"model":"demo","messages":[{"role":"user","content":"hi","model":"a","model":"b"}],'
            '"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object",'
            '"properties":{"model":{"type":"string"},"model":{"type":"integer"}}}}}],'
            '"temperature":0.1,"temperature":0.2}').encode()
    st, _, b = post(gw, body)
    assert st == 200 and b == b'{"ok":true}', b
    sent = up.requests[-1].partition(b"\r\n\r\n")[2]
    assert sent == body.replace(b'{"model":"demo"', b'{"model":"upstream-name"', 1), sent


def test_backend_addresses_never_reach_clients(env):
    """Backends named by default (host:port): with the default config no
    response — success, streamed, 502, 503, 504, an in-band stream error —
    carries a backend's address in its headers or body.  Logs, metrics and
    /admin/ keep the names."""
    from harness import metrics, open_request, read_all
    live = env.sim("--ttft-ms", 0, "--tps", 0)
    hang = env.sim("--hang-rate", 1)
    dead = free_port()

    def model(name, port, extra=""):
        return (f"  - name: {name}\n{extra}    backends:\n      - url: http://127.0.0.1:{port}\n"
                "        first_byte_timeout: 300ms\n")
    cfg = ("server:\n  listen: 127.0.0.1:{PORT}\n  workers: 1\n  log_level: warn\nmodels:\n"
           + model("demo", live) + model("dead", dead) + model("hung", hang)
           + model("hung-stream", hang, "    stream_keepalive: 100ms\n"))
    gw = env.gateway(cfg)

    def clean(st, h, b, want):
        assert st == want, (st, b)
        seen = (" ".join(f"{k}: {v}" for k, v in h.items()) + "\n").encode() + b
        assert b"127.0.0.1" not in seen, seen
        for port in (live, hang, dead):
            assert b":%d" % port not in seen, (port, seen)
        assert "x-shade-backend" not in h

    clean(*post(gw, chat()), 200)
    clean(*post(gw, chat(stream=True)), 200)
    st, h, b = post(gw, chat(model="dead"))
    clean(st, h, b, 502)
    assert err_of(b)["code"] == "upstream_unreachable"
    st, h, b = post(gw, chat(model="dead"))
    clean(st, h, b, 503)
    assert err_of(b)["code"] == "no_healthy_backend"
    st, h, b = post(gw, chat(model="hung"))
    clean(st, h, b, 504)
    assert err_of(b)["code"] == "upstream_timeout"
    # a stream committed by keep-alive comments reports the timeout in-band
    r = parse_responses(read_all(open_request(gw, chat(model="hung-stream", stream=True),
                                              extra=b"Connection: close\r\n")))
    clean(r[0][0], r[0][1], r[0][2], 200)
    assert b"upstream_timeout" in r[0][2], r[0][2]
    # the operator still sees which backend it was
    m = metrics(gw)
    assert m[f'shade_upstream_errors_total{{model="dead",backend="127.0.0.1:{dead}",kind="connect"}}'] >= 1


def test_route_table_edges(env):
    """The route table (router.c): exact paths, prefixes on a segment
    boundary, the admin key before the method on every /admin/ path (even
    one that does not exist), 405 naming the allowed methods, the query
    string ignored, HEAD where GET is allowed."""
    import os
    from harness import metrics
    os.environ["SHADE_TEST_ROUTE_KEY"] = "k"
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1) + "admin:\n  key_env: SHADE_TEST_ROUTE_KEY\n")
    key = {"x-shade-admin-key": "k"}
    for path in ("/healthz/", "/v1/models/", "/v1/chat/completionsX", "/admin", "/ADMIN/backends", "/"):
        st, _, b = request(gw, "GET", path)
        assert st == 404 and err_of(b)["code"] == "unknown_url", (path, st, b)
    for path in ("/admin/", "/admin/x", "/admin/shadowsX", "/admin/backends/"):
        st, _, b = request(gw, "GET", path)
        assert st == 401 and err_of(b)["code"] == "admin_key_required", (path, st, b)
        assert request(gw, "GET", path, headers=key)[0] == 404, path
    st, _, b = request(gw, "DELETE", "/admin/backends", headers={"authorization": "Bearer wrong"})
    assert st == 401 and err_of(b)["code"] == "invalid_admin_key"
    st, h, b = request(gw, "DELETE", "/admin/backends", headers=key)
    e = err_of(b)
    assert st == 405 and e["code"] == "method_not_allowed"
    assert h["allow"] == "GET, HEAD", h  # RFC 9110 15.5.6
    assert e["message"] == "Method DELETE is not allowed on /admin/backends (allowed: GET, HEAD).", e
    st, _, b = request(gw, "GET", "/admin/reload", headers=key)
    assert st == 405 and err_of(b)["message"].endswith("(allowed: POST).")
    st, h, b = request(gw, "PUT", "/v1/embeddings")
    assert h["allow"] == "POST"
    assert st == 405 and err_of(b)["message"] == "Method PUT is not allowed on /v1/embeddings (allowed: POST)."
    assert request(gw, "GET", "/healthz?probe=1")[0] == 200
    assert request(gw, "HEAD", "/readyz")[0] == 200
    assert request(gw, "GET", "/admin/shadows/", headers=key)[0] == 200
    assert request(gw, "GET", "/admin/shadows/nope", headers=key)[0] == 404
    m = metrics(gw)
    assert m["shade_admin_auth_failures_total"] == 5
    assert m['shade_requests_total{model="",variant="primary",backend="",code="401",class="4xx"}'] == 5
