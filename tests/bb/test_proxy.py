"""Proxying: bodies, streaming, pipelining, headers, metrics."""
import json
import re
import socket
import threading

from harness import (basic_config, canned, chat, json_response, metrics, parse_responses, post, raw,
                     request, sse_events, stream_text)


def normalise(body):
    """Ids and timestamps differ between two calls; everything else must not."""
    s = body.decode()
    s = re.sub(r'"id":"[^"]*"', '"id":"X"', s)
    s = re.sub(r'"created":\d+', '"created":0', s)
    return s


def test_non_streaming_matches_direct(env):
    s1 = env.sim("--seed", 7, "--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    st, h, body = post(gw, chat("What is a gateway?"))
    assert st == 200, (st, body)
    j = json.loads(body)
    assert j["object"] == "chat.completion"
    assert j["choices"][0]["message"]["content"]
    assert j["usage"]["completion_tokens"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"]), h
    st2, _, direct = post(s1, chat("What is a gateway?"))
    assert st2 == 200
    assert normalise(body) == normalise(direct)


def test_streaming_identical_to_direct(env):
    s1 = env.sim("--seed", 3, "--ttft-ms", 5, "--tps", 2000, "--max-tokens", 40)
    gw = env.gateway(basic_config(s1))
    for extra in ({}, {"stream_options": {"include_usage": True}}):
        req = chat("Tell me a story", stream=True, **extra)
        st, h, body = post(gw, req)
        assert st == 200 and h["content-type"].startswith("text/event-stream"), (st, h)
        st2, _, direct = post(s1, req)
        assert normalise(body) == normalise(direct)
        evs = sse_events(body)
        assert evs[-1] == "[DONE]"
        if extra:
            assert json.loads(evs[-2])["usage"]["completion_tokens"] == 40
    _, _, whole = post(gw, chat("Tell me a story"))
    assert stream_text(body) == json.loads(whole)["choices"][0]["message"]["content"]


def test_stream_bytes_pass_through_unchanged(env):
    events = [b'data: {"choices":[{"index":0,"delta":{"content":"a\\u00e9"}}]}\n\n',
              b': keep-alive comment\n\n',
              b'data: {"choices":[{"index":0,"delta":{"content":" b"}}]}\r\n\r\n',
              b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}\n\n',
              b'data: [DONE]\n\n']
    payload = b"".join(events)
    # chunk boundaries that cut through events and even through "data:"
    pieces, chunked = [payload[0:7], payload[7:60], payload[60:61], payload[61:]], b""
    for p in pieces:
        chunked += b"%x\r\n%s\r\n" % (len(p), p)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    up = canned([head + chunked[:50], chunked[50:123], chunked[123:] + b"0\r\n\r\n"])
    gw = env.gateway(basic_config(up.port))
    st, h, body = post(gw, chat(stream=True))
    assert st == 200
    assert body == payload
    m = metrics(gw)
    assert m['shade_output_tokens_total{model="demo",variant="primary",backend="b0"}'] == 2
    assert m['shade_input_tokens_total{model="demo",variant="primary",backend="b0"}'] == 11


def test_model_name_rewritten_rest_byte_for_byte(env):
    payload = b'{"ok":true}'
    up = canned(json_response(payload))
    cfg = basic_config(up.port, backend_extra="model: real-model-7b")
    gw = env.gateway(cfg)
    body = b'{ "messages" : [ {"role":"user","content":"x\\u0041"} ] ,"model":"demo", "temperature": 0.50}'
    st, _, resp = post(gw, body, headers={"x-custom": "kept", "connection": "keep-alive, x-hop",
                                          "x-hop": "dropped"})
    assert st == 200 and resp == payload
    sent = up.requests[0]
    head, _, sent_body = sent.partition(b"\r\n\r\n")
    assert sent_body == body.replace(b'"demo"', b'"real-model-7b"')
    assert b"x-custom: kept" in head
    assert b"x-hop" not in head.lower()
    assert re.search(rb"(?im)^host: 127\.0\.0\.1:%d\r$" % up.port, head)
    assert re.search(rb"(?im)^x-request-id: [0-9a-f]{32}\r?$", head)


def test_pipelining_in_order(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    reqs = b""
    contents = ["one", "two two", "three three three"]
    for c in contents:
        b = json.dumps(chat(c)).encode()
        reqs += b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
    reqs += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    out = parse_responses(raw(gw, reqs, timeout=1.0))
    assert [r[0] for r in out] == [200, 200, 200, 200], out
    for c, r in zip(contents, out):
        _, _, direct = post(s1, chat(c))
        assert json.loads(r[2])["choices"] == json.loads(direct)["choices"]


def test_chunked_request_body_and_expect_continue(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    b = json.dumps(chat("chunked")).encode()
    req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n%s\r\n" % (10, b[:10]) + b"%x\r\n%s\r\n" % (len(b) - 10, b[10:]) + b"0\r\n\r\n")
    out = parse_responses(raw(gw, req))
    assert out[0][0] == 200
    s = socket.create_connection(("127.0.0.1", gw))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(b))
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    s.sendall(b)
    got = b""
    while b'"choices"' not in got:
        got += s.recv(65536)
    s.close()
    assert got.startswith(b"HTTP/1.1 200 OK")


def test_large_body(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1, server_extra="max_body_bytes: 4MiB"))
    big = "word " * 400000  # ~2 MB
    st, _, body = post(gw, chat(big))
    assert st == 200, body[:300]
    st, _, direct = post(s1, chat(big))
    assert json.loads(body)["choices"] == json.loads(direct)["choices"]


def test_http10_client(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    b = json.dumps(chat("old client", stream=True)).encode()
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b),
              until_close=True)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower()  # 1.0 has no chunked: close-delimited
    assert sse_events(body)[-1] == "[DONE]"


def test_request_id_taken_from_client(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    st, h, _ = post(gw, chat(), headers={"x-request-id": "req-abc.123"})
    assert h["x-request-id"] == "req-abc.123"
    st, h, _ = post(gw, {"model": "nope", "messages": []}, headers={"x-request-id": "err-1"})
    assert st == 404 and h["x-request-id"] == "err-1"
    st, h, _ = request(gw, "GET", "/healthz", headers={"x-request-id": "bad id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"])


def test_models_health_ready_metrics(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1, extra_model="  - name: other\n    backends:\n"
                                                  f"      - url: http://127.0.0.1:{s1}\n"))
    st, _, body = request(gw, "GET", "/v1/models")
    assert st == 200
    ids = [m["id"] for m in json.loads(body)["data"]]
    assert ids == ["demo", "other"]
    assert request(gw, "GET", "/healthz")[0] == 200
    assert request(gw, "GET", "/readyz")[0] == 200
    post(gw, chat())
    post(gw, chat(stream=True))
    m = metrics(gw)
    assert m['shade_requests_total{model="demo",variant="primary",backend="b0",code="200",class="2xx"}'] == 2
    assert m['shade_time_to_first_token_seconds_count{model="demo",variant="primary",backend="b0"}'] == 1
    assert m['shade_request_duration_seconds_count{model="demo",variant="primary",backend="b0"}'] == 2
    assert m['shade_output_tokens_total{model="demo",variant="primary",backend="b0"}'] > 0
    # the streamed request had no include_usage: its usage was estimated
    assert m['shade_usage_estimated_total{model="demo",variant="primary",backend="b0"}'] == 1
    assert m['shade_requests_in_flight{model="demo"}'] == 0


def test_round_robin_spreads(env):
    a = env.sim("--ttft-ms", 0, "--tps", 0)
    b = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(a, b, server_extra="expose_backend_header: true"))
    seen = {}
    for _ in range(20):
        st, h, _ = post(gw, chat())
        assert st == 200
        seen[h["x-shade-backend"]] = seen.get(h["x-shade-backend"], 0) + 1
    assert set(seen) == {"b0", "b1"} and min(seen.values()) >= 6, seen


def test_backend_api_key_from_environment(env):
    payload = b'{"ok":true}'
    up = canned(json_response(payload))
    gw = env.gateway(basic_config(up.port, backend_extra="api_key_env: SHADE_TEST_KEY"),
                     env={"SHADE_TEST_KEY": "sk-upstream-secret"})
    st, _, _ = post(gw, chat(), headers={"authorization": "Bearer client-key"})
    assert st == 200
    head = up.requests[0].partition(b"\r\n\r\n")[0].lower()
    assert head.count(b"authorization:") == 1
    assert b"authorization: bearer sk-upstream-secret" in head
    assert b"client-key" not in head


def test_max_concurrent_gives_503_when_full(env):
    slow = env.sim("--ttft-ms", 1500, "--tps", 0)
    gw = env.gateway(basic_config(slow, backend_extra="max_concurrent: 1"))
    results = []
    t = threading.Thread(target=lambda: results.append(post(gw, chat())[0]))
    t.start()
    import time
    deadline = time.time() + 5
    while metrics(gw).get('shade_backend_in_flight{model="demo",backend="b0"}') != 1:
        assert time.time() < deadline
        time.sleep(0.02)
    st, _, body = post(gw, chat())
    assert st == 503 and json.loads(body)["error"]["code"] == "backend_at_capacity", body
    t.join()
    assert results == [200]


def test_hop_by_hop_response_headers_dropped(env):
    """RFC 9110 §7.6.1: the standard hop-by-hop fields and every field an
    upstream names in its Connection header(s) describe the upstream's hop;
    none of them reaches the client, streamed or not."""
    import http.client
    hop = (b"Connection: close, X-Hop-Secret\r\nX-Hop-Secret: internal-only\r\n"
           b"connection: x-hop-two\r\nX-Hop-Two: also-internal\r\n"
           b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\n"
           b"Trailer: X-Checksum\r\nProxy-Authenticate: Basic realm=\"internal\"\r\n"
           b"X-End-To-End: kept\r\n")
    payload = b'{"ok":true}'
    plain = canned([b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                    % (len(payload), hop, payload)], close_after=True)
    ev = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    streamed = canned([b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
                       b"%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (hop, len(ev), ev)], close_after=True)
    cfg = basic_config(plain.port, extra_model="  - name: streamed\n    backends:\n"
                                               f"      - url: http://127.0.0.1:{streamed.port}\n")
    gw = env.gateway(cfg)
    c = http.client.HTTPConnection("127.0.0.1", gw, timeout=10)
    for body, want in ((chat(), payload), (chat(model="streamed", stream=True), ev)):
        for _ in range(2):  # the upstream's "close" is not the client's: same connection again
            c.request("POST", "/v1/chat/completions", body=json.dumps(body),
                      headers={"content-type": "application/json"})
            r = c.getresponse()
            got = r.read()
            assert r.status == 200 and got == want, (r.status, got)
            names = [k.lower() for k, _ in r.getheaders()]
            values = " ".join(v for _, v in r.getheaders()).lower()
            for gone in ("x-hop-secret", "x-hop-two", "keep-alive", "proxy-connection", "upgrade", "te",
                         "trailer", "proxy-authenticate"):
                assert gone not in names, (gone, r.getheaders())
            assert "internal" not in values and "x-hop" not in values, r.getheaders()
            assert r.getheader("x-end-to-end") == "kept"
            assert not r.will_close
    c.close()


def test_request_headers_named_in_any_connection_header_dropped(env):
    up = canned(json_response(b'{"ok":true}'))
    gw = env.gateway(basic_config(up.port))
    long_name = b"x-" + b"l" * 200  # longer than any fixed name buffer
    b = json.dumps(chat()).encode()
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: x-first\r\nX-First: 1\r\n"
              b"Connection: keep-alive, %s\r\n%s: 2\r\nX-Kept: 3\r\nContent-Length: %d\r\n\r\n%s"
              % (long_name, long_name, len(b), b))
    assert parse_responses(out)[0][0] == 200
    head = up.requests[0].partition(b"\r\n\r\n")[0].lower()
    assert b"x-first" not in head and long_name not in head, head
    assert b"x-kept: 3" in head
