"""Observability: the metric families a model service needs (variants,
status classes, time per output token, gateway overhead, queue wait, input
sizes), the per-request overhead header."""
import json
import os

from harness import basic_config, chat, free_port, metrics, post, request, stream_text


def test_overhead_header_and_histogram(env):
    sim = env.sim("--ttft-ms", 30, "--tps", 0)
    gw = env.gateway(basic_config(sim))
    st, h, body = post(gw, chat())
    assert st == 200
    ovh = int(h["x-shade-overhead-us"])
    # shade's own time is counted; the sim's 30 ms wait is not
    assert 0 < ovh < 30000, ovh
    m = metrics(gw)
    assert m['shade_gateway_overhead_seconds_count{model="demo"}'] == 1
    assert m['shade_gateway_overhead_seconds_sum{model="demo"}'] < 0.03


def test_variants_classes_and_token_timing(env):
    sim = env.sim("--ttft-ms", 0, "--tps", 200, "--max-tokens", 10)
    dead = free_port()
    cfg = basic_config(dead, model="demo", extra_model=f"""    fallback: [small]
  - name: small
    backends:
      - url: http://127.0.0.1:{sim}
        name: s0
""")
    gw = env.gateway(cfg)
    st, h, body = post(gw, chat(stream=True))
    assert st == 200 and h["x-shade-fallback"] == "small"
    st, _, _ = post(gw, {"model": "small", "messages": [{"role": "user", "content": "x"}]})
    assert st == 200
    assert post(gw, {"model": "nope", "messages": []})[0] == 404
    m = metrics(gw)
    assert m['shade_requests_total{model="small",variant="fallback",backend="s0",code="200",class="2xx"}'] == 1
    assert m['shade_requests_total{model="small",variant="primary",backend="s0",code="200",class="2xx"}'] == 1
    assert m['shade_requests_total{model="",variant="primary",backend="",code="404",class="4xx"}'] == 1
    # the stream: 10 tokens at 200/s, about 5 ms apart
    n = m['shade_time_per_output_token_seconds_count{model="small",variant="fallback",backend="s0"}']
    tpot = m['shade_time_per_output_token_seconds_sum{model="small",variant="fallback",backend="s0"}'] / n
    assert n == 1 and 0.002 < tpot < 0.05, tpot
    assert m['shade_request_input_tokens_count{model="small"}'] == 2


def test_queue_wait_and_admin_failures(env):
    sim = env.sim("--ttft-ms", 200, "--tps", 0)
    os.environ["SHADE_TEST_OBS_KEY"] = "k"
    gw = env.gateway(basic_config(sim, extra_model="    max_in_flight: 1\n    queue: { size: 10 }\n",
                                  ) + "admin:\n  key_env: SHADE_TEST_OBS_KEY\n")
    import threading
    res = []
    ts = [threading.Thread(target=lambda: res.append(post(gw, chat())[0])) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert res == [200] * 3
    assert request(gw, "GET", "/admin/backends")[0] == 401
    m = metrics(gw)
    # two wait (one, when two workers admit at once: max_in_flight may be
    # overshot by one per worker), each for a request before it to end
    n = m['shade_queue_wait_seconds_count{model="demo"}']
    assert n in (1, 2) and m['shade_queue_wait_seconds_sum{model="demo"}'] / n > 0.1, m
    assert m["shade_admin_auth_failures_total"] == 1
