"""stream_usage: inject (mod_usage, a response transform): exact token counts
for streams whose client did not ask for usage, and the client's stream as it
would have been without the injection."""
import json
import re
import socket
import time

from harness import (FakeUpstream, basic_config, chat, metrics, parse_responses, post, raw, read_all, sse_events,
                     stream_text)


def normalise(body):
    s = body.decode()
    s = re.sub(r'"id":"[^"]*"', '"id":"X"', s)
    s = re.sub(r'"created":\d+', '"created":0', s)
    return s


def counter(m, name):
    return sum(v for k, v in m.items() if k.startswith(name + "{") and 'model="demo"' in k)


def test_injected_usage_is_hidden_and_counted_exactly(env):
    s1 = env.sim("--seed", 3, "--ttft-ms", 5, "--tps", 2000, "--max-tokens", 40)
    gw = env.gateway(basic_config(s1, extra_model="    stream_usage: inject\n"))
    req = chat("Tell me a story", stream=True)
    before = metrics(gw)
    st, h, body = post(gw, req)
    assert st == 200 and h["content-type"].startswith("text/event-stream"), (st, h)
    assert "content-length" not in h and h.get("transfer-encoding") == "chunked", h
    _, _, direct = post(s1, req)
    # what the client would have received without the injection, byte for byte
    assert normalise(body) == normalise(direct)
    assert "usage" not in body.decode()
    _, _, with_usage = post(s1, chat("Tell me a story", stream=True, stream_options={"include_usage": True}))
    usage = json.loads(sse_events(with_usage)[-2])["usage"]
    after = metrics(gw)
    assert counter(after, "shade_usage_estimated_total") == counter(before, "shade_usage_estimated_total")
    assert counter(after, "shade_output_tokens_total") - counter(before, "shade_output_tokens_total") == \
        usage["completion_tokens"] == 40
    assert counter(after, "shade_input_tokens_total") - counter(before, "shade_input_tokens_total") == \
        usage["prompt_tokens"]


def test_client_that_asked_for_usage_and_non_streaming_untouched(env):
    s1 = env.sim("--seed", 3, "--ttft-ms", 0, "--tps", 0, "--max-tokens", 20)
    gw = env.gateway(basic_config(s1, extra_model="    stream_usage: inject\n"))
    req = chat("Tell me a story", stream=True, stream_options={"include_usage": True})
    st, h, body = post(gw, req)
    assert st == 200
    _, _, direct = post(s1, req)
    assert normalise(body) == normalise(direct)
    assert json.loads(sse_events(body)[-2])["usage"]["completion_tokens"] == 20
    st, h, body = post(gw, chat("Tell me a story"))
    assert st == 200 and "content-length" in h, h
    _, _, direct = post(s1, chat("Tell me a story"))
    assert normalise(body) == normalise(direct)


def test_upstream_asked_for_usage_options_merged(env):
    events = [b'data: {"usage":null,"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
              b': keep-alive comment\n\n',
              b'event: message\nid: 7\ndata: {"choices":[{"index":0,\ndata: "delta":{"content":" b"}}],"usage":null}\r\n\r\n',
              b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":2,"total_tokens":13}}\n\n',
              b'data: [DONE]\n\n']
    payload = b"".join(events)
    pieces = [payload[0:7], payload[7:60], payload[60:61], payload[61:]]
    up = FakeUpstream(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                   b"content-length: %d\r\n\r\n" % len(payload)] + pieces)
    gw = env.gateway(basic_config(up.port, extra_model="    stream_usage: inject\n"))
    before = metrics(gw)
    st, h, body = post(gw, chat("hi", stream=True, stream_options={"include_usage": False, "x": 1}))
    assert st == 200, (st, body)
    sent = json.loads(up.requests[-1].partition(b"\r\n\r\n")[2])
    assert sent["stream_options"] == {"x": 1, "include_usage": True}, sent
    # re-emitted one event at a time: data lines kept, comments and other fields not
    assert body == (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
                    b'data: {"choices":[{"index":0,\ndata: "delta":{"content":" b"}}]}\n\n'
                    b'data: [DONE]\n\n'), body
    assert stream_text(body) == "a b"
    after = metrics(gw)
    assert counter(after, "shade_output_tokens_total") - counter(before, "shade_output_tokens_total") == 2
    assert counter(after, "shade_input_tokens_total") - counter(before, "shade_input_tokens_total") == 11
    # without stream_options at all, the member is added; the client's bytes are kept
    req = json.dumps(chat("hi", stream=True)).encode() + b" \n"
    post(gw, req)
    assert up.requests[-1].partition(b"\r\n\r\n")[2] == \
        req[:-3] + b',"stream_options":{"include_usage":true}} \n', up.requests[-1]


def test_option_off_leaves_request_alone(env):
    up = FakeUpstream(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                   b"content-length: 14\r\n\r\ndata: [DONE]\n\n"])
    gw = env.gateway(basic_config(up.port))
    req = json.dumps(chat("hi", stream=True)).encode()
    st, h, body = post(gw, req)
    assert st == 200 and h.get("content-length") == "14", h
    assert up.requests[-1].partition(b"\r\n\r\n")[2] == req


def test_json_answer_to_a_stream_is_held_and_passed_on(env):
    # an upstream that answers a stream with a JSON body: held whole (the
    # transform leaves a body alone), then written chunked, usage read
    small = json.dumps({"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "x"}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
    big = b'{"pad":"' + b"y" * (9 << 20) + b'"}'
    bodies = [small, big]
    up = FakeUpstream(lambda req: [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                                   % len(bodies[0]), bodies.pop(0)])
    gw = env.gateway(basic_config(up.port, extra_model="    stream_usage: inject\n"))
    before = metrics(gw)
    st, h, body = post(gw, chat("hi", stream=True))
    assert st == 200 and body == small and h.get("transfer-encoding") == "chunked", h
    after = metrics(gw)
    assert counter(after, "shade_input_tokens_total") - counter(before, "shade_input_tokens_total") == 5
    # over the 8 MiB bound: what was held goes out as it came, then the rest
    st, h, body = post(gw, chat("hi", stream=True), timeout=30)
    assert st == 200 and body == big, (st, len(body))


def test_http10_client_gets_a_close_delimited_stream(env):
    s1 = env.sim("--seed", 3, "--ttft-ms", 0, "--tps", 0, "--max-tokens", 5)
    gw = env.gateway(basic_config(s1, extra_model="    stream_usage: inject\n"))
    b = json.dumps(chat("hi", stream=True)).encode()
    out = raw(gw, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b),
              timeout=5, until_close=True)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert b"content-length" not in head.lower() and b"chunked" not in head.lower(), head
    evs = sse_events(body)
    assert evs[-1] == "[DONE]" and all("usage" not in e for e in evs), evs


def test_slow_reader_gets_the_whole_transformed_stream(env):
    # a stream far larger than the client's output buffer high-water mark:
    # the upstream is paused and resumed, and no re-emitted event is lost
    s1 = env.sim("--seed", 5, "--ttft-ms", 0, "--tps", 0, "--max-tokens", 30000)
    gw = env.gateway(basic_config(s1, extra_model="    stream_usage: inject\n"))
    req = chat("Tell me a long story", stream=True, max_tokens=30000)
    b = json.dumps(req).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", gw))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(b), b))
    time.sleep(1.0)
    out = read_all(s, timeout=30)
    (st, h, body), = parse_responses(out)
    assert st == 200 and h.get("transfer-encoding") == "chunked", h
    _, _, direct = post(s1, req, timeout=30)
    assert normalise(body) == normalise(direct)
    assert len(body) > 1 << 20, len(body)
