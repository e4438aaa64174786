"""Failures around the gateway: dead backends, broken streams, clients that
leave, shutdown in the middle of a stream."""
import os
import signal
import socket
import subprocess
import time

from harness import (BIN, SLOW, basic_config, canned, chat, free_port, metrics, open_request,
                     parse_responses, post, read_all, sse_events, stream_text, wait_serving)


def test_dead_backend_retried_elsewhere(env):
    live = env.sim("--ttft-ms", 0, "--tps", 0)
    dead = free_port()
    gw = env.gateway(basic_config(dead, live, server_extra="expose_backend_header: true"))
    for _ in range(12):
        st, h, b = post(gw, chat())
        assert st == 200, b
        assert h["x-shade-backend"] == "b1"
    m = metrics(gw)
    assert m['shade_upstream_errors_total{model="demo",backend="b0",kind="connect"}'] >= 1
    assert m['shade_retries_total{model="demo"}'] >= 1
    assert m['shade_backend_up{model="demo",backend="b0"}'] == 0


def test_backend_recovers_after_fail_timeout(env):
    port = free_port()
    gw = env.gateway(basic_config(port, backend_extra="fail_timeout: 500ms"))
    assert post(gw, chat())[0] == 502
    assert post(gw, chat())[0] == 503
    env.sim("--ttft-ms", 0, "--tps", 0, port=port)
    time.sleep(0.6)
    assert post(gw, chat())[0] == 200


def test_upstream_dies_mid_stream(env):
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    ev = b'data: {"choices":[{"index":0,"delta":{"content":"partial"}}]}\n\n'
    up = canned([head + b"%x\r\n%s\r\n" % (len(ev), ev)], close_after=True)
    gw = env.gateway(basic_config(up.port))
    out = read_all(open_request(gw, chat(stream=True)), timeout=5)
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in out
    assert b'"error"' in out and b"interrupted" in out
    assert not out.endswith(b"0\r\n\r\n"), "a cut stream must not look complete"
    m = metrics(gw)
    assert m['shade_upstream_errors_total{model="demo",backend="b0",kind="closed"}'] == 1
    assert m['shade_requests_total{model="demo",variant="primary",backend="b0",code="502",class="5xx"}'] == 1


def test_client_leaves_mid_stream(env):
    slow = env.sim("--ttft-ms", 0, "--tps", 50, "--max-tokens", 200)
    gw = env.gateway(basic_config(slow))
    for _ in range(3):
        s = open_request(gw, chat(stream=True))
        s.settimeout(5 * SLOW)
        assert b"data:" in s.recv(4096)
        s.close()
    deadline = time.time() + 5 * SLOW
    while time.time() < deadline:
        m = metrics(gw)
        if m.get('shade_requests_total{model="demo",variant="primary",backend="b0",code="499",class="4xx"}') == 3:
            break
        time.sleep(0.05)
    assert m['shade_requests_total{model="demo",variant="primary",backend="b0",code="499",class="4xx"}'] == 3
    assert m['shade_requests_in_flight{model="demo"}'] == 0
    assert m['shade_backend_in_flight{model="demo",backend="b0"}'] == 0
    assert post(gw, chat())[0] == 200


def test_graceful_shutdown_finishes_stream(env):
    slow = env.sim("--ttft-ms", 0, "--tps", 40, "--max-tokens", 60)  # ~1.5 s stream
    gw = env.gateway(basic_config(slow))
    proc = env.last_gateway
    s = open_request(gw, chat("long story", stream=True))
    s.settimeout(10 * SLOW)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    # no new connections once draining
    try:
        c = socket.create_connection(("127.0.0.1", gw), timeout=1)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(1)
        refused = c.recv(100) == b""
        c.close()
    except OSError:
        refused = True
    assert refused, "a draining gateway accepted a new request"
    r = parse_responses(first + read_all(s))
    evs = sse_events(r[0][2])
    assert evs[-1] == "[DONE]", evs[-3:]
    assert len(stream_text(r[0][2]).split()) == 60
    assert proc.p.wait(timeout=10 * SLOW) == 0


def test_shutdown_deadline_cuts_hung_request(env):
    hang = env.sim("--hang-rate", 1)
    gw = env.gateway(basic_config(hang, server_extra="shutdown_timeout: 500ms"))
    proc = env.last_gateway
    s = open_request(gw, chat())
    time.sleep(0.2)
    t0 = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.p.wait(timeout=10 * SLOW) == 0
    assert time.time() - t0 < 3 * SLOW
    s.close()


def test_many_concurrent_streams(env):
    s1 = env.sim("--ttft-ms", 20, "--tps", 200, "--max-tokens", 30)
    gw = env.gateway(basic_config(s1))
    socks = [open_request(gw, chat("concurrent", stream=True), extra=b"Connection: close\r\n")
             for _ in range(200)]
    texts = set()
    for s in socks:
        r = parse_responses(read_all(s, timeout=20))
        assert r[0][0] == 200
        texts.add(stream_text(r[0][2]))
    assert len(texts) == 1  # same prompt, same seed: same text every time


def test_cli(env):
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout and "check" in out.stdout and "sim" in out.stdout
    out = subprocess.run([BIN, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("shade ")
    for sub in ("serve", "check", "sim"):
        out = subprocess.run([BIN, sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout.lower(), (sub, out)
    assert subprocess.run([BIN, "frobnicate"], capture_output=True).returncode == 2
    root = os.path.dirname(os.path.dirname(BIN)) if os.path.isabs(BIN) else "."
    ok = subprocess.run([BIN, "check", "-c", os.path.join(root, "examples/basic.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = os.path.join(env.tmp, "bad.yaml")
    with open(bad, "w") as f:
        f.write("server:\n  listen: 127.0.0.1:8080\nmodels:\n  - name: demo\n    backends:\n"
                "      - url: http://127.0.0.1:8001\n        weigth: 2\n")
    out = subprocess.run([BIN, "check", "-c", bad], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith(f"{bad}:7:9: "), out.stderr


def test_out_of_descriptors_does_not_spin(env):
    import resource

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1, server_extra="workers: 1").replace("  workers: 2\n", ""), preexec=low_fd_limit)
    proc = env.last_gateway
    socks = []
    for _ in range(100):  # more than the gateway can accept
        socks.append(socket.create_connection(("127.0.0.1", gw)))
    time.sleep(0.3)
    c0 = proc.cpu_seconds()
    time.sleep(1.0)
    used = proc.cpu_seconds() - c0
    assert used < 0.5, f"the gateway burnt {used:.2f} s of CPU in 1 s while out of descriptors"
    for s in socks:
        s.close()
    wait_serving(gw, proc, timeout=5)  # recovered once descriptors are free again
    assert post(gw, chat())[0] == 200
