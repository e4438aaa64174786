"""Backend health: active checks, passive outlier ejection, /admin/backends."""
import http.server
import json
import ssl
import threading
import time

from harness import SLOW, basic_config, chat, metrics, post, request


class FlipUpstream:
    """A tiny backend whose GET /health answers 200 or 503 as told; every
    POST gets a small chat completion."""

    def __init__(self, ssl_ctx=None):
        outer = self
        self.healthy = True
        self.health_hits = 0

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                outer.health_hits += 1
                if outer.healthy:
                    self._send(200, b'{"status":"ok"}')
                else:
                    self._send(503, b'{"status":"sick"}')

            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                self.rfile.read(n)
                body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                self._send(200, body.encode())

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        if ssl_ctx:
            self.srv.socket = ssl_ctx.wrap_socket(self.srv.socket, server_side=True)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def admin(gw):
    st, _, body = request(gw, "GET", "/admin/backends")
    assert st == 200, body
    out = {}
    for m in json.loads(body)["models"]:
        for b in m["backends"]:
            out[(m["name"], b["name"])] = b
    return out


def wait_state(gw, name, state, timeout=5.0):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        b = admin(gw)[("demo", name)]
        if b["state"] == state:
            return b
        time.sleep(0.05)
    raise AssertionError(f"{name} never became {state}: {admin(gw)}")


CHECK = """health_check:
  path: /health
  interval: 100ms
  timeout: 300ms
  healthy_threshold: 2
  unhealthy_threshold: 2"""


def test_failing_health_check_takes_backend_out_and_back(env):
    b0, b1 = FlipUpstream(), FlipUpstream()
    try:
        gw = env.gateway(basic_config(b0.port, b1.port, backend_extra=CHECK, server_extra="expose_backend_header: true"))
        wait_state(gw, "b0", "up")
        seen = {post(gw, chat())[1]["x-shade-backend"] for _ in range(6)}
        assert seen == {"b0", "b1"}
        b0.healthy = False
        info = wait_state(gw, "b0", "unhealthy")
        assert info["last_check"] == "fail" and info["last_check_status"] == 503
        for _ in range(10):
            st, h, body = post(gw, chat())
            assert st == 200, body
            assert h["x-shade-backend"] == "b1"
        b0.healthy = True
        info = wait_state(gw, "b0", "up")
        assert info["last_check"] == "ok"
        seen = {post(gw, chat())[1]["x-shade-backend"] for _ in range(6)}
        assert "b0" in seen
        m = metrics(gw)
        assert m['shade_health_checks_total{model="demo",backend="b0",result="failure"}'] >= 2
        assert m['shade_health_checks_total{model="demo",backend="b0",result="success"}'] >= 2
        assert m['shade_backend_up{model="demo",backend="b0"}'] == 1
    finally:
        b0.close()
        b1.close()


def test_one_probe_per_interval_whatever_the_workers(env):
    b0 = FlipUpstream()
    try:
        cfg = basic_config(b0.port, backend_extra=CHECK.replace("100ms", "200ms"),
                           server_extra="workers: 4")
        cfg = cfg.replace("  workers: 2\n", "")
        env.gateway(cfg)
        time.sleep(1.0)
        # about 5 probes in a second: one checker, not one per worker
        assert 2 <= b0.health_hits <= 8, b0.health_hits
    finally:
        b0.close()


OUTLIER = """outlier:
  consecutive_errors: 3
  base_ejection: 5s
  max_ejection: 20s
  max_ejected_percent: {pct}"""


def test_erroring_backend_is_ejected(env):
    bad = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 1)
    good = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(bad, good, backend_extra=OUTLIER.format(pct=50), server_extra="expose_backend_header: true"))
    for _ in range(12):
        post(gw, chat())
    info = admin(gw)[("demo", "b0")]
    assert info["state"] == "ejected", info
    assert info["ejections"] == 1
    assert 3.0 < info["readmit_in_s"] <= 5.0
    assert admin(gw)[("demo", "b1")]["state"] == "up"
    for _ in range(6):
        st, h, body = post(gw, chat())
        assert st == 200, body
        assert h["x-shade-backend"] == "b1"
    m = metrics(gw)
    assert m['shade_backend_ejections_total{model="demo",backend="b0"}'] == 1
    assert m['shade_backend_ejections_total{model="demo",backend="b1"}'] == 0
    assert m['shade_backend_up{model="demo",backend="b0"}'] == 0


def test_max_ejected_percent_keeps_last_backend_in(env):
    bad0 = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 1)
    bad1 = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 1)
    gw = env.gateway(basic_config(bad0, bad1, backend_extra=OUTLIER.format(pct=100)))
    for _ in range(20):
        st, _, _ = post(gw, chat())
        assert st in (500, 502, 503), st
    states = sorted(b["state"] for b in admin(gw).values())
    assert states == ["ejected", "up"], states
    # the one left in keeps taking traffic
    st, h, _ = post(gw, chat())
    assert st == 500
    m = metrics(gw)
    assert (m['shade_backend_up{model="demo",backend="b0"}']
            + m['shade_backend_up{model="demo",backend="b1"}']) == 1


def test_single_backend_never_ejected(env):
    bad = env.sim("--ttft-ms", 0, "--tps", 0, "--error-rate", 1)
    gw = env.gateway(basic_config(bad, backend_extra=OUTLIER.format(pct=50)))
    for _ in range(10):
        assert post(gw, chat())[0] == 500
    info = admin(gw)[("demo", "b0")]
    assert info["state"] == "up" and info["ejections"] == 0
    assert info["consecutive_failures"] >= 3


def test_admin_backends_shape(env):
    live = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(live))
    st, h, body = request(gw, "GET", "/admin/backends")
    assert st == 200 and h["content-type"] == "application/json"
    b = json.loads(body)["models"][0]["backends"][0]
    assert b["name"] == "b0" and b["url"] == f"http://127.0.0.1:{live}"
    assert b["state"] == "up" and b["inflight"] == 0 and b["last_check"] is None
    assert request(gw, "POST", "/admin/backends", body="{}")[0] == 405


def test_health_check_over_https(env):
    from test_tls import make_cert
    key, crt = make_cert(env.tmp, "IP:127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    up = FlipUpstream(ssl_ctx=ctx)
    try:
        cfg = basic_config(up.port, backend_extra=f"ca_file: {crt}\n" + CHECK)
        gw = env.gateway(cfg.replace(f"http://127.0.0.1:{up.port}", f"https://127.0.0.1:{up.port}"))
        info = wait_state(gw, "b0", "up")
        deadline = time.time() + 3 * SLOW
        while admin(gw)[("demo", "b0")]["last_check"] != "ok" and time.time() < deadline:
            time.sleep(0.05)
        assert admin(gw)[("demo", "b0")]["last_check"] == "ok"
        up.healthy = False
        wait_state(gw, "b0", "unhealthy")
        st, _, body = post(gw, chat())
        assert st == 503, body
        up.healthy = True
        wait_state(gw, "b0", "up")
        assert post(gw, chat())[0] == 200
    finally:
        up.close()
