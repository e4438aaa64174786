"""`shade sim --judge`: the simulated judge model (deterministic verdicts in
both orders, position bias, margin, streamed and not) and `--quality`, the
knob that makes a simulated candidate worse (doc/simulator.md)."""
import json
import subprocess

from harness import BIN, SLOW, basic_config, post, sse_events, stream_text

BETTER = "The quick brown fox jumps over the lazy dog while seven wise owls watch from old oak branches."
WORSE = "A fox jumps."


def judge_prompt(a, b, request="user: Describe a fox."):
    """The user message judge.c sends (src/eval/judge.c, module comment)."""
    return ("Compare two answers to the same request. Decide which answer is better for the user.\n\n"
            f"[Request]\n{request}\n[Answer A]\n{a}\n[Answer B]\n{b}\n[End]\n\n"
            'Give a one-sentence reason, then end with exactly one line: "VERDICT: A", "VERDICT: B" '
            'or "VERDICT: TIE".')


def ask(port, content, stream=False, **kw):
    body = {"model": "judge", "temperature": 0, "stream": stream,
            "messages": [{"role": "system", "content": "You are an impartial judge."},
                         {"role": "user", "content": content}]}
    body.update(kw)
    st, h, data = post(port, body)
    assert st == 200, (st, data)
    if stream:
        evs = [json.loads(e) for e in sse_events(data) if e != "[DONE]"]
        return stream_text(data), evs[-1]["choices"][0]["finish_reason"], len(evs) - 2
    j = json.loads(data)
    return (j["choices"][0]["message"]["content"], j["choices"][0]["finish_reason"],
            j["usage"]["completion_tokens"])


def verdict(text):
    assert text.count("VERDICT:") == 1, text
    return text.rsplit("VERDICT:", 1)[1].strip()


def test_judge_sim_verdicts(env):
    p = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    for stream in (False, True):
        # the answer with more distinct words wins, in either position
        text, fr, ntok = ask(p, judge_prompt(BETTER, WORSE), stream)
        assert text == "Answer A has 17 distinct words and answer B has 3. VERDICT: A", text
        assert fr == "stop" and ntok == len(text.split())
        assert verdict(ask(p, judge_prompt(WORSE, BETTER), stream)[0]) == "B"
        # equal answers, and answers within 10% of each other, tie
        assert verdict(ask(p, judge_prompt(BETTER, BETTER), stream)[0]) == "TIE"
        assert verdict(ask(p, judge_prompt("a b c d e f g h i j", "a b c d e f g h i"), stream)[0]) == "TIE"
        # repeated words and case do not add to the score
        assert verdict(ask(p, judge_prompt("Fox fox FOX fox fox", "red fox"), stream)[0]) == "B"
    # deterministic: the same prompt always gets the same answer
    assert len({ask(p, judge_prompt(BETTER, WORSE))[0] for _ in range(5)}) == 1
    # content as an array of text parts
    parts = [{"type": "text", "text": "[Answer A]\nx\n"}, {"type": "text", "text": "[Answer B]\nx y z\n[End]"}]
    assert verdict(ask(p, parts)[0]) == "B"
    # only the last user message is judged; without sections there is no verdict
    st, _, data = post(p, {"messages": [{"role": "user", "content": judge_prompt(BETTER, WORSE)},
                                        {"role": "assistant", "content": "VERDICT: A"},
                                        {"role": "user", "content": "and now?"}]})
    text = json.loads(data)["choices"][0]["message"]["content"]
    assert st == 200 and "VERDICT" not in text and text.startswith("No answers to compare"), text
    # max_tokens cuts the reply like any other: the verdict is lost
    text, fr, ntok = ask(p, judge_prompt(BETTER, WORSE), max_tokens=4)
    assert (text, fr, ntok) == ("Answer A has 17 ", "length", 4)
    text, fr, ntok = ask(p, judge_prompt(BETTER, WORSE), True, max_tokens=4)
    assert (text, fr, ntok) == ("Answer A has 17 ", "length", 4)
    # legacy completions are not judged: made-up words as usual
    st, _, data = post(p, {"prompt": judge_prompt(BETTER, WORSE), "max_tokens": 5}, path="/v1/completions")
    assert st == 200 and "VERDICT" not in json.loads(data)["choices"][0]["text"]


def test_judge_sim_paced_stream(env):
    # the judge's reply is paced and framed like any other: one chunk per word
    p = env.sim("--judge", "--ttft-ms", 20, "--tps", 500)
    st, _, data = post(p, {"stream": True, "stream_options": {"include_usage": True},
                           "messages": [{"role": "user", "content": judge_prompt(WORSE, BETTER)}]})
    evs = [json.loads(e) for e in sse_events(data) if e != "[DONE]"]
    text = stream_text(data)
    assert st == 200 and verdict(text) == "B"
    words = [e["choices"][0]["delta"]["content"] for e in evs[1:-2]]
    assert words == [w + " " for w in text.split()[:-1]] + [text.split()[-1]]
    assert evs[-2]["choices"][0]["finish_reason"] == "stop"
    assert evs[-1]["usage"]["completion_tokens"] == len(words)


def test_judge_sim_bias(env):
    first = env.sim("--judge", "--judge-bias", "first", "--ttft-ms", 0, "--tps", 0)
    second = env.sim("--judge", "--judge-bias=second", "--ttft-ms", 0, "--tps", 0)
    for stream in (False, True):
        for a, b in ((BETTER, WORSE), (WORSE, BETTER), (BETTER, BETTER)):
            t1 = ask(first, judge_prompt(a, b), stream)[0]
            assert verdict(t1) == "A" and "preferring the first answer" in t1, t1
            t2 = ask(second, judge_prompt(a, b), stream)[0]
            assert verdict(t2) == "B" and "preferring the second answer" in t2, t2
    # a position-biased judge is inconsistent: order1 and order2 both say A
    assert verdict(ask(first, judge_prompt(BETTER, WORSE))[0]) == verdict(ask(first, judge_prompt(WORSE, BETTER))[0])


def test_judge_sim_margin(env):
    strict = env.sim("--judge", "--judge-margin", 0, "--ttft-ms", 0, "--tps", 0)
    loose = env.sim("--judge", "--judge-margin", 0.5, "--ttft-ms", 0, "--tps", 0)
    ten, nine = "a b c d e f g h i j", "a b c d e f g h i"
    assert verdict(ask(strict, judge_prompt(ten, nine))[0]) == "A"
    assert verdict(ask(strict, judge_prompt(ten, ten))[0]) == "TIE"
    assert verdict(ask(loose, judge_prompt(ten, "a b c d e"))[0]) == "TIE"
    assert verdict(ask(loose, judge_prompt(ten, "a b c d"))[0]) == "A"


def test_judge_sim_through_gateway(env):
    # the judge worker calls the judge through the gateway, as a client would
    p = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(p, model="judge"))
    st, _, data = post(gw, {"model": "judge", "messages": [{"role": "user", "content": judge_prompt(WORSE, BETTER)}]},
                       headers={"x-shade-no-shadow": "1"})
    assert st == 200 and verdict(json.loads(data)["choices"][0]["message"]["content"]) == "B"


def chat_words(port, prompt, stream=False, max_tokens=None):
    body = {"messages": [{"role": "user", "content": prompt}], "stream": stream}
    if max_tokens:
        body["max_tokens"] = max_tokens
    st, _, data = post(port, body)
    assert st == 200
    text = stream_text(data) if stream else json.loads(data)["choices"][0]["message"]["content"]
    return text


FILLERS = {"the", "of", "and", "to", "in", "is", "you", "that"}


def test_sim_quality(env):
    full = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 400)
    same = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 400, "--quality", 1)
    half = env.sim("--ttft-ms", 0, "--tps", 0, "--max-tokens", 400, "--quality", 0.5)
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0)
    for prompt in ("Describe a fox.", "Explain the tides."):
        a = chat_words(full, prompt)
        assert chat_words(same, prompt) == a  # --quality 1 is the default
        b = chat_words(half, prompt)
        # deterministic per prompt, the same streamed and not
        assert chat_words(half, prompt) == b == chat_words(half, prompt, stream=True)
        wa, wb = a.split(), b.split()
        assert len(wa) == len(wb) == 400  # same length, same sentences
        changed = [(x, y) for x, y in zip(wa, wb) if x != y]
        # about half the words became fillers (a few were fillers already)
        assert 120 < len(changed) < 240, len(changed)
        assert all(y.lower().rstrip(".") in FILLERS for _, y in changed)
        # the garbled answer loses to the full one in both orders
        assert verdict(ask(judge, judge_prompt(a, b))[0]) == "A"
        assert verdict(ask(judge, judge_prompt(b, a))[0]) == "B"
    # a quality-0 model only says filler words
    zero = env.sim("--ttft-ms", 0, "--tps", 0, "--quality", 0)
    words = {w.lower().rstrip(".") for w in chat_words(zero, "anything").split()}
    assert words <= FILLERS, words


def test_judge_sim_bad_options(env):
    for args in (["--judge-bias", "sideways"], ["--quality", "1.5"], ["--quality", "-0.1"], ["--judge=1"],
                 ["--judge-margin", "2"]):
        r = subprocess.run([BIN, "sim", "--listen", "127.0.0.1:0", *args], capture_output=True,
                           timeout=10 * SLOW)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.count(b"\n") == 1 and b"shade sim: --" in r.stderr, r.stderr
    r = subprocess.run([BIN, "sim", "--help"], capture_output=True, timeout=10 * SLOW)
    assert r.returncode == 0 and b"--judge-bias" in r.stdout and b"--quality" in r.stdout
