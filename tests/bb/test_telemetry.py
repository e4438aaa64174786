"""Traces (W3C traceparent in and out, OTLP/HTTP export, shadow legs linked
to the primary) and the JSON access log (fields, no prompts or keys by
default, reopen on SIGUSR1 through the master)."""
import http.server
import json
import os
import signal
import threading
import time

from harness import SLOW, FakeUpstream, basic_config, chat, json_response, post, request


class OtlpReceiver:
    """A minimal OTLP/HTTP (JSON) trace receiver on 127.0.0.1."""

    def __init__(self):
        spans = self.spans = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/traces" and self.headers["content-type"] == "application/json"
                for rs in json.loads(body)["resourceSpans"]:
                    svc = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}["service.name"]
                    for ss in rs["scopeSpans"]:
                        for sp in ss["spans"]:
                            sp["_service"] = svc["stringValue"]
                            spans.append(sp)
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def wait(self, pred, n=1, timeout=10):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            got = [s for s in self.spans if pred(s)]
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise AssertionError(f"spans not received; have {json.dumps(self.spans)[:2000]}")

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def attrs(span):
    out = {}
    for a in span.get("attributes", []):
        v = a["value"]
        out[a["key"]] = next(iter(v.values()))
    return out


def ok_answer(req):
    return json_response({"id": "x", "object": "chat.completion", "model": "m",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})


def test_traces_propagated_exported_and_linked(env):
    rx = OtlpReceiver()
    primary = FakeUpstream(ok_answer)
    cand = env.sim("--ttft-ms", 0, "--tps", 0)
    db = os.path.join(env.tmp, "pairs.db")
    cfg = basic_config(primary.port) + f"""shadows:
  - name: cand
    model: demo
    aa_percent: 0
    backends:
      - url: http://127.0.0.1:{cand}
shadow_store:
  path: {db}
tracing:
  endpoint: http://127.0.0.1:{rx.port}/v1/traces
  interval: 100ms
  service_name: shade-test
"""
    gw = env.gateway(cfg)
    tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    st, _, _ = post(gw, chat(), headers={"traceparent": f"00-{tid}-{sid}-01"})
    assert st == 200
    # propagated upstream: same trace, shade's attempt span as the parent
    head = primary.requests[0].partition(b"\r\n\r\n")[0].decode().lower()
    tp = [l.split(": ", 1)[1] for l in head.split("\r\n") if l.startswith("traceparent:")]
    assert len(tp) == 1, head
    v, t, s, f = tp[0].split("-")
    assert (v, t, f) == ("00", tid, "01") and s != sid
    server = rx.wait(lambda x: x["kind"] == 2 and x["traceId"] == tid)[0]
    assert server["parentSpanId"] == sid and server["name"] == "chat demo"
    assert server["_service"] == "shade-test"
    a = attrs(server)
    assert a["gen_ai.request.model"] == "demo" and a["http.response.status_code"] in ("200", 200)
    assert a["gen_ai.usage.input_tokens"] in ("3", 3)
    attempt = rx.wait(lambda x: x["kind"] == 3 and x["traceId"] == tid)[0]
    assert attempt["parentSpanId"] == server["spanId"] and attempt["spanId"] == s
    assert int(attempt["startTimeUnixNano"]) >= int(server["startTimeUnixNano"])
    assert int(attempt["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])
    # the shadow leg: its own trace, linked to the user's request span
    leg = rx.wait(lambda x: x["name"] == "shadow cand")[0]
    assert leg["traceId"] != tid
    assert leg["links"] == [{"traceId": tid, "spanId": server["spanId"]}] or \
        [(k["traceId"], k["spanId"]) for k in leg["links"]] == [(tid, server["spanId"])]
    assert attrs(leg)["shade.leg"] == "shadow"
    # a trace the client did not sample is propagated but not exported
    t2 = "0af7651916cd43dd8448eb211c80319c"
    assert post(gw, chat(), headers={"traceparent": f"00-{t2}-b7ad6b7169203331-00"})[0] == 200
    head2 = primary.requests[1].partition(b"\r\n\r\n")[0].decode().lower()
    assert f"-{t2}-" in head2 and head2.split("traceparent: ")[1].split("\r\n")[0].endswith("-00")
    # a malformed traceparent starts a new trace
    assert post(gw, chat(), headers={"traceparent": "00-xyz"})[0] == 200
    rx.wait(lambda x: x["kind"] == 2 and x["traceId"] not in (tid, t2))
    time.sleep(0.3 * SLOW)
    assert not [x for x in rx.spans if x["traceId"] == t2]
    st, _, body = request(gw, "GET", "/metrics")
    assert 'shade_trace_spans_total{result="exported"}' in body.decode()
    assert 'shade_trace_spans_total{result="dropped"} 0' in body.decode()
    rx.close()


def test_sampling_ratio_zero_exports_nothing(env):
    rx = OtlpReceiver()
    sim = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(sim) + f"tracing:\n  endpoint: http://127.0.0.1:{rx.port}/v1/traces\n"
                                         "  interval: 100ms\n  sample: 0\n")
    for _ in range(5):
        assert post(gw, chat())[0] == 200
    # a sampled parent still wins (parent-based)
    tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert post(gw, chat(), headers={"traceparent": f"00-{tid}-00f067aa0ba902b7-01"})[0] == 200
    rx.wait(lambda x: x["traceId"] == tid, n=2)
    time.sleep(0.3 * SLOW)
    assert {x["traceId"] for x in rx.spans} == {tid}
    rx.close()


def read_lines(path, n, timeout=10):
    """The log's lines, without the harness's own /healthz polls."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        try:
            with open(path) as f:
                lines = [json.loads(l) for l in f.read().splitlines()]
            lines = [l for l in lines if l["path"] != "/healthz"]
            if len(lines) >= n:
                return lines
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {n} lines")


def test_access_log_and_rotation(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 0)
    log = os.path.join(env.tmp, "access.log")
    gw = env.gateway(basic_config(sim) + f"access_log:\n  path: {log}\n  flush: 100ms\n")
    st, h, _ = post(gw, chat("a secret prompt"), headers={"x-request-id": "req-1",
                                                          "authorization": "Bearer sk-secret"})
    assert st == 200
    assert post(gw, chat(stream=True), headers={"x-request-id": "req-2"})[0] == 200
    assert post(gw, {"model": "nope", "messages": []}, headers={"x-request-id": "req-3"})[0] == 404
    assert request(gw, "GET", "/readyz", headers={"x-request-id": "req-4"})[0] == 200
    # each worker flushes its own buffer: lines are whole, not globally ordered
    lines = {l["request_id"]: l for l in read_lines(log, 4)}
    assert len(lines) == 4
    first = lines["req-1"]
    assert first["request_id"] == "req-1" and first["model"] == "demo" and first["status"] == 200
    assert first["backend"] == "b0" and first["variant"] == "primary" and first["stream"] is False
    assert first["tokens_in"] > 0 and first["tokens_out"] > 0 and first["latency_ms"] > 0
    assert first["attempts"] == 1 and first["error"] is None and first["shadowed"] == 0
    assert first["overhead_us"] == int(h["x-shade-overhead-us"]) or first["overhead_us"] >= int(h["x-shade-overhead-us"])
    assert lines["req-2"]["stream"] is True and lines["req-2"]["ttft_ms"] is not None
    assert lines["req-3"]["status"] == 404 and lines["req-3"]["model"] is None
    assert lines["req-4"]["path"] == "/readyz" and lines["req-4"]["status"] == 200
    raw = open(log).read()
    assert "secret prompt" not in raw and "sk-secret" not in raw   # never, unless configured
    # rotation: rename, SIGUSR1 to the master, new lines go to a new file
    os.rename(log, log + ".1")
    os.kill(env.last_gateway.pid, signal.SIGUSR1)
    deadline = time.time() + 5 * SLOW
    while not os.path.exists(log) and time.time() < deadline:
        time.sleep(0.02)
    assert os.path.exists(log), "the access log was not reopened"
    assert post(gw, chat(), headers={"x-request-id": "after"})[0] == 200
    after = read_lines(log, 1)
    assert [l["request_id"] for l in after] == ["after"]
    old = [json.loads(l) for l in open(log + ".1").read().splitlines()]
    assert "req-1" in [l["request_id"] for l in old]
    assert "after" not in [l["request_id"] for l in old]


def test_access_log_prompts_when_configured(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 0)
    log = os.path.join(env.tmp, "access.log")
    gw = env.gateway(basic_config(sim) + f"access_log:\n  path: {log}\n  flush: 100ms\n  prompts: true\n")
    assert post(gw, chat("a logged prompt"))[0] == 200
    [line] = read_lines(log, 1)
    assert "a logged prompt" in json.dumps(line)
