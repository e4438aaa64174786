"""Zero-downtime reload (SIGHUP, POST /admin/reload), binary upgrade
(SIGUSR2) and restart of a crashed serving process.  `shade serve` is a
master that owns the listening sockets; serving processes come and go."""
import json
import os
import signal
import threading
import time

from harness import (SLOW, basic_config, chat, open_request, parse_responses, post, read_all, request,
                     sse_events, stream_text, wait_serving)


def write_config(env, port, text):
    path = os.path.join(env.tmp, f"gw{port}.yaml")
    with open(path, "w") as f:
        f.write(text.replace("{PORT}", str(port)))
    return path


def wait_child_change(proc, old, timeout=10):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        kids = proc.children()
        if kids and old not in kids:
            return kids
        time.sleep(0.02)
    raise AssertionError(f"serving process {old} was not replaced: {proc.children()}")


def test_ten_reloads_under_load_lose_nothing(env):
    a = env.sim("--ttft-ms", 1, "--tps", 0)
    b = env.sim("--ttft-ms", 1, "--tps", 0)
    cfg = basic_config(a, b, server_extra="expose_backend_header: true")
    gw = env.gateway(cfg)
    proc = env.last_gateway
    stop = threading.Event()
    codes, errors = [], []

    def load():
        while not stop.is_set():
            try:
                codes.append(post(gw, chat("under reload"))[0])
            except OSError as e:  # a refused or reset connection is a lost request
                errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(10):
        # alternate the weights' names so every reload really changes something
        write_config(env, gw, cfg.replace("name: b0", f"name: b0-gen{i}"))
        old = proc.children()[0]
        os.kill(proc.pid, signal.SIGHUP)
        wait_child_change(proc, old)
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert codes and all(c == 200 for c in codes), {c: codes.count(c) for c in set(codes)}
    seen = {post(gw, chat())[1]["x-shade-backend"] for _ in range(6)}
    assert "b0-gen9" in seen, seen
    assert proc.p.poll() is None, "the master must keep running"


def test_invalid_config_keeps_serving(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    cfg = basic_config(s1, server_extra="expose_backend_header: true")
    gw = env.gateway(cfg)
    proc = env.last_gateway
    child = proc.children()
    write_config(env, gw, cfg + "bogus_key: 1\n")
    st, _, body = request(gw, "POST", "/admin/reload")
    e = json.loads(body)["error"]
    assert st == 400 and e["code"] == "invalid_config" and ":11:1: unknown key" in e["message"], body
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(0.3)
    assert proc.children() == child
    assert post(gw, chat())[0] == 200
    assert "reload refused" in proc.output()
    write_config(env, gw, cfg.replace("name: b0", "name: fixed"))
    st, _, body = request(gw, "POST", "/admin/reload")
    assert st == 202, body
    wait_child_change(proc, child[0])
    assert post(gw, chat())[1]["x-shade-backend"] == "fixed"


def test_stream_in_flight_survives_reload_and_upgrade(env):
    slow = env.sim("--ttft-ms", 0, "--tps", 50, "--max-tokens", 50)  # ~1 s
    cfg = basic_config(slow)
    gw = env.gateway(cfg)
    proc = env.last_gateway
    for sig in (signal.SIGHUP, signal.SIGUSR2):
        s = open_request(gw, chat("keep going", stream=True), extra=b"Connection: close\r\n")
        s.settimeout(10 * SLOW)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        old = proc.children()[0]
        os.kill(proc.pid, sig)
        wait_child_change(proc, old)
        assert post(gw, chat())[0] == 200  # the new process serves meanwhile
        body = parse_responses(first + read_all(s))[0][2]
        assert sse_events(body)[-1] == "[DONE]"
        assert len(stream_text(body).split()) == 50
    assert proc.p.poll() is None


def test_crashed_serving_process_is_restarted(env):
    s1 = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(s1))
    proc = env.last_gateway
    # the serving process answers /healthz a moment before it tells the
    # master it is ready; killed in between, it counts as a failed start
    # (the master exits): give the message time to arrive
    time.sleep(0.5 * SLOW)
    old = proc.children()[0]
    os.kill(old, signal.SIGKILL)
    wait_child_change(proc, old)
    wait_serving(gw, proc, timeout=5)
    assert post(gw, chat())[0] == 200
    assert "exited unexpectedly" in proc.output()
