"""Admission control: max_in_flight, a bounded priority queue, queue
timeouts, shedding with Retry-After."""
import json
import threading
import time

from harness import FakeUpstream, chat, json_response, metrics, post


def config(port, model_extra, backend_extra=""):
    return ("server:\n  listen: 127.0.0.1:{PORT}\n  workers: 1\n  log_level: warn\n"
            "models:\n  - name: demo\n" + "".join(f"    {l}\n" for l in model_extra.strip().splitlines()) +
            f"    backends:\n      - url: http://127.0.0.1:{port}\n        name: b0\n" +
            "".join(f"        {l}\n" for l in backend_extra.strip().splitlines()))


def in_background(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def wait_for(gw, key, value, timeout=5):
    deadline = time.time() + timeout
    while metrics(gw).get(key) != value:
        assert time.time() < deadline, f"{key} never reached {value}"
        time.sleep(0.02)


def test_queue_full_sheds_and_queued_request_runs(env):
    slow = env.sim("--ttft-ms", 800, "--tps", 0)
    gw = env.gateway(config(slow, "queue: {size: 1, timeout: 10s}", "max_concurrent: 1"))
    t1, r1 = in_background(lambda: post(gw, chat("one"))[0])
    wait_for(gw, 'shade_backend_in_flight{model="demo",backend="b0"}', 1)
    t2, r2 = in_background(lambda: post(gw, chat("two"))[0])
    wait_for(gw, 'shade_queue_depth{model="demo"}', 1)
    st, h, body = post(gw, chat("three"))
    e = json.loads(body)["error"]
    assert st == 503 and e["code"] == "queue_full" and h["retry-after"] == "10", (st, h, body)
    t1.join()
    t2.join()
    assert r1 == [200] and r2 == [200]
    m = metrics(gw)
    assert m['shade_shed_total{model="demo",reason="queue_full"}'] == 1
    assert m['shade_queue_depth{model="demo"}'] == 0


def test_queue_timeout(env):
    slow = env.sim("--ttft-ms", 1500, "--tps", 0)
    gw = env.gateway(config(slow, "queue: {size: 5, timeout: 300ms, shed_status: 429}", "max_concurrent: 1"))
    t1, r1 = in_background(lambda: post(gw, chat())[0])
    wait_for(gw, 'shade_backend_in_flight{model="demo",backend="b0"}', 1)
    t0 = time.time()
    st, h, body = post(gw, chat())
    waited = time.time() - t0
    assert st == 429 and json.loads(body)["error"]["code"] == "queue_timeout" and h["retry-after"] == "1"
    assert waited >= 0.25, waited
    t1.join()
    assert r1 == [200]
    assert metrics(gw)['shade_shed_total{model="demo",reason="queue_timeout"}'] == 1


def test_priority_order(env):
    order = []

    def respond(req):
        order.append(json.loads(req.partition(b"\r\n\r\n")[2])["messages"][0]["content"])
        time.sleep(0.3)
        return json_response({"ok": True})

    up = FakeUpstream(respond)
    gw = env.gateway(config(up.port, "queue: {size: 10, priority_header: x-priority}", "max_concurrent: 1"))
    threads = []
    for name, prio in (("first", "5"), ("low", "1"), ("mid", "5"), ("high", "9")):
        t, _ = in_background(lambda n=name, p=prio: post(gw, chat(n), headers={"x-priority": p})[0])
        threads.append(t)
        time.sleep(0.08)
    for t in threads:
        t.join()
    assert order == ["first", "high", "mid", "low"], order


def test_model_max_in_flight(env):
    slow = env.sim("--ttft-ms", 800, "--tps", 0)
    gw = env.gateway(config(slow, "max_in_flight: 1"))
    t1, r1 = in_background(lambda: post(gw, chat())[0])
    wait_for(gw, 'shade_requests_in_flight{model="demo"}', 1)
    time.sleep(0.05)
    st, _, body = post(gw, chat())
    assert st == 503 and json.loads(body)["error"]["code"] == "model_at_capacity", body
    t1.join()
    assert r1 == [200]
    assert post(gw, chat())[0] == 200


def test_key_priority_overrides_the_header(env):
    """A key's priority is its requests' place in the queue; a client with
    that key cannot raise it with the priority header."""
    import os
    os.environ["SHADE_TEST_PRIO_LOW"] = "sk-prio-low-0123456789"
    os.environ["SHADE_TEST_PRIO_HIGH"] = "sk-prio-high-0123456789"
    order = []

    def respond(req):
        order.append(json.loads(req.partition(b"\r\n\r\n")[2])["messages"][0]["content"])
        time.sleep(0.3)
        return json_response({"ok": True})

    up = FakeUpstream(respond)
    cfg = config(up.port, "queue: {size: 10, priority_header: x-priority}", "max_concurrent: 1") + (
        "auth:\n  keys:\n"
        "    - { name: batch, key_env: SHADE_TEST_PRIO_LOW, priority: 1 }\n"
        "    - { name: interactive, key_env: SHADE_TEST_PRIO_HIGH, priority: 8 }\n")
    gw = env.gateway(cfg)
    low = {"authorization": "Bearer sk-prio-low-0123456789", "x-priority": "9"}
    high = {"authorization": "Bearer sk-prio-high-0123456789", "x-priority": "0"}
    threads = []
    for name, h in (("first", low), ("low", low), ("high", high)):
        t, _ = in_background(lambda n=name, hh=h: post(gw, chat(n), headers=hh)[0])
        threads.append(t)
        time.sleep(0.08)
    for t in threads:
        t.join()
    assert order == ["first", "high", "low"], order
