"""Black-box tests of the balancing strategies: which backend answered is
read from the x-shade-backend response header (turned on in each config)."""
from harness import basic_config, chat, post

EXPOSE = "expose_backend_header: true"


def _sims(env, n=3):
    return [env.sim("--ttft-ms", 0, "--tps", 0) for _ in range(n)]


def test_prefix_affinity_session_header_is_sticky(env):
    gw = env.gateway(basic_config(*_sims(env), server_extra=EXPOSE,
                                  extra_model="    balance: prefix_affinity\n"
                                              "    affinity_header: x-session-id\n"))
    home = {}
    for rnd in range(4):
        for s in range(24):
            st, h, _ = post(gw, chat(f"turn {rnd} of session {s}"), headers={"x-session-id": f"sess-{s}"})
            assert st == 200
            be = h["x-shade-backend"]
            assert home.setdefault(s, be) == be, (s, home[s], be)
    # 24 sessions do not all hash to one backend
    assert len(set(home.values())) >= 2, home


def test_prefix_affinity_prompt_prefix_without_header(env):
    gw = env.gateway(basic_config(*_sims(env), server_extra=EXPOSE,
                                  extra_model="    balance: prefix_affinity\n"
                                              "    affinity_header: x-session-id\n"
                                              "    affinity_prefix_bytes: 64\n"))
    system = "You are a terse assistant for the accounting team. " * 3   # > 64 bytes
    seen = set()
    for i in range(10):
        body = {"model": "demo", "messages": [{"role": "system", "content": system},
                                              {"role": "user", "content": f"question {i}"}]}
        st, h, _ = post(gw, body)
        assert st == 200
        seen.add(h["x-shade-backend"])
    assert len(seen) == 1, seen


def test_new_strategies_serve_and_spread(env):
    for strat in ("p2c_ewma", "least_tokens"):
        sims = _sims(env)
        gw = env.gateway(basic_config(*sims, server_extra=EXPOSE, extra_model=f"    balance: {strat}\n"))
        seen = {}
        for i in range(30):
            st, h, _ = post(gw, chat(f"hello {i}", max_tokens=8))
            assert st == 200
            seen[h["x-shade-backend"]] = seen.get(h["x-shade-backend"], 0) + 1
        assert sum(seen.values()) == 30
        if strat == "least_tokens":   # sequential: everything ties, ties rotate
            assert set(seen) == {"b0", "b1", "b2"}, seen


def test_prefix_affinity_session_moves_only_when_its_backend_goes(env):
    import signal
    ports = _sims(env)
    gw = env.gateway(basic_config(*ports, server_extra=EXPOSE, extra_model="    balance: prefix_affinity\n"
                                                      "    affinity_header: x-session-id\n"))
    hdr = {"x-session-id": "the-session"}
    home = {post(gw, chat("a"), headers=hdr)[1]["x-shade-backend"] for _ in range(5)}
    assert len(home) == 1, home
    home = home.pop()
    victim = env.procs[int(home[1:])]  # backends are named b0, b1, b2 after the sims, in order
    victim.stop(signal.SIGKILL)
    env.expect_exit[victim.pid] = -9
    moved = [post(gw, chat("b"), headers=hdr) for _ in range(5)]
    assert all(st == 200 for st, _, _ in moved)
    new_homes = {h["x-shade-backend"] for _, h, _ in moved}
    assert len(new_homes) == 1 and home not in new_homes, (home, new_homes)
