"""`shade report` against stores built here with Python's sqlite3, using the
schema text taken from src/shadow/store.h itself.  Every dataset is designed so
that the report's figures can be worked out by hand; the arithmetic is in
the comments, and the few formulas (Wilson, percentile, z test, binomial
tail) are written out below so the expected numbers do not come from the
code under test."""
import datetime
import html.parser
import json
import math
import os
import re
import sqlite3
import subprocess
import time

from harness import BIN, ROOT, SLOW

Z = 1.959964

# ---------------------------------------------------------------- schema


def schema_sql():
    """The STORE_SCHEMA_SQL macro of src/shadow/store.h: its C string literals
    concatenated (comments skipped, escapes undone)."""
    with open(os.path.join(ROOT, "src", "shadow", "store.h")) as f:
        src = f.read()
    start = src.index("#define STORE_SCHEMA_SQL")
    end = src.index("\n#endif", start)
    body, out, i = src[start:end], [], 0
    while i < len(body):
        if body.startswith("/*", i):
            i = body.index("*/", i) + 2
        elif body[i] == '"':
            i += 1
            lit = []
            while body[i] != '"':
                if body[i] == "\\":
                    lit.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}[body[i + 1]])
                    i += 2
                else:
                    lit.append(body[i])
                    i += 1
            out.append("".join(lit))
            i += 1
        else:
            i += 1
    sql = "".join(out)
    assert sql.count("CREATE TABLE") == 7, sql
    return sql


SCHEMA = schema_sql()

# ------------------------------------------------------------ hand formulas


def wilson(k, n):
    """centre (p + z²/2n)/(1 + z²/n) ± z √(p(1-p)/n + z²/4n²)/(1 + z²/n)"""
    p, z2 = k / n, Z * Z
    d = 1 + z2 / n
    c = (p + z2 / (2 * n)) / d
    h = Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def pct(values, q):
    """linear interpolation between closest ranks (numpy's default)"""
    v = sorted(values)
    h = (len(v) - 1) * q
    lo = int(math.floor(h))
    if lo + 1 >= len(v):
        return v[lo]
    return v[lo] + (h - lo) * (v[lo + 1] - v[lo])


def two_prop_p(k1, n1, k2, n2):
    pool = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))
    return math.erfc(abs(k1 / n1 - k2 / n2) / se / math.sqrt(2))


def binom_tail(w, n):
    """P(X >= w), X ~ Bin(n, 1/2)"""
    return sum(math.comb(n, i) for i in range(w, n + 1)) / 2 ** n


def e_value(S, F, p0):
    """The beta-mixture e-value of S successes and F failures against
    H0: p <= p0 (uniform mixing over [p0, 1]), from its integral form:
    S! F! / (S+F+1)! * P(Bin(S+F+1, 1-p0) >= F+1) / (p0^S (1-p0)^(F+1)),
    computed independently of the C code (exact binomial sums)."""
    n = S + F + 1
    q = 1 - p0
    tail = sum(math.comb(n, k) * q ** k * p0 ** (n - k) for k in range(F + 1, n + 1))
    return tail / (math.comb(S + F, S) * n) / (p0 ** S * q ** (F + 1))


def e_sign(a, b):
    return e_value(a, b, 0.5)


def near(a, b, tol=1e-6):
    assert a is not None and abs(a - b) <= tol, (a, b)


# --------------------------------------------------------------- fixtures

T0 = 1_763_700_000.0  # 2025-11-21T04:40:00Z


def leg(**kw):
    d = dict(streamed=0, status=200, error=None, latency_ms=100.0, ttft_ms=None, itl_ms=None,
             tokens_in=None, tokens_out=None, cost_usd=None, finish_reason="stop",
             response="same answer", target="m", backend="b0")
    d.update(kw)
    return d


def fail(kind, status=0, **kw):
    return leg(status=status, error=kind, latency_ms=None, response=None, finish_reason=None, **kw)


class Store:
    def __init__(self, path):
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def pair(self, shadow, ts, primary, shadow_leg, aa=None, cmp=None, cmp_aa=None, judge=None,
             prompt='[{"role":"user","content":"hi"}]'):
        cur = self.db.execute(
            "INSERT INTO pairs (shadow, request_id, ts, model, endpoint, prompt, prompt_hash) "
            "VALUES (?,?,?,?,?,?,?)", (shadow, "req", ts, "demo", "chat", prompt, "0" * 64))
        pid = cur.lastrowid
        for name, l in (("primary", primary), ("shadow", shadow_leg), ("aa", aa)):
            if l is None:
                continue
            cols = ["pair_id", "leg"] + list(l)
            self.db.execute(f"INSERT INTO legs ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                            [pid, name] + list(l.values()))
        for against, c in (("shadow", cmp), ("aa", cmp_aa)):
            if c is None:
                continue
            c = dict(c)
            c.setdefault("status_agree", 1)
            cols = ["pair_id", "against"] + list(c)
            self.db.execute(
                f"INSERT INTO comparisons ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                [pid, against] + list(c.values()))
        if judge:
            name, outcome = judge
            self.db.execute("INSERT INTO judgements (pair_id, judge, order1, order2, outcome, ts) "
                            "VALUES (?,?,?,?,?,?)", (pid, name, "A", "B", outcome, ts))
        return pid

    def counters(self, shadow, **kv):
        for k, v in kv.items():
            self.db.execute("INSERT INTO counters (shadow, name, value) VALUES (?,?,?)", (shadow, k, v))

    def event(self, shadow, ts, kind, detail):
        self.db.execute("INSERT INTO events (ts, shadow, kind, detail) VALUES (?,?,?,?)",
                        (ts, shadow, kind, detail))

    def close(self):
        self.db.commit()
        self.db.close()


def simple(st, shadow, n, ratio=1.0, aa_every=0, ts0=T0, **pair_kw):
    """n pairs, every leg successful, shadow latency = ratio × primary,
    primary latency 100 + i; an A/A leg (agreeing) every aa_every pairs."""
    ids = []
    for i in range(n):
        aa = aa_every and i % aa_every == 0
        ids.append(st.pair(shadow, ts0 + i, leg(latency_ms=100.0 + i), leg(latency_ms=ratio * (100.0 + i)),
                           aa=leg() if aa else None, cmp=dict(exact=1, rouge_l=1.0),
                           cmp_aa=dict(exact=1, rouge_l=1.0) if aa else None, **pair_kw))
    return ids


def build_ready(st):
    """'ready': 200 pairs that should pass every no_regression criterion.
    Returns the pair ids in insertion order."""
    ids = []
    for i in range(200):
        p_lat = 100 + i / 2
        primary = leg(latency_ms=p_lat, streamed=1, ttft_ms=50.0, itl_ms=10.0, tokens_in=100,
                      tokens_out=50, cost_usd=0.001, response="The answer is <b>42</b> & more")
        prompt = '[{"role":"user","content":"what is 6*7?"}]'
        if i == 0:
            shadow = fail("timeout", streamed=1)
            cmp = dict(status_agree=0)
            prompt = json.dumps([{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "<script>alert('x')</script> & why?"}])
        else:
            shadow = leg(latency_ms=1.1 * p_lat, streamed=1, ttft_ms=60.0, itl_ms=12.0, tokens_in=100,
                         tokens_out=60, cost_usd=0.0005, response="The answer is <b>42</b> & more")
            exact = 0 if i % 10 == 5 else 1
            cmp = dict(exact=exact, rouge_l=1.0 if exact else 0.6, edit_sim=1.0 if exact else 0.7)
            if not exact:
                primary["response"] = "the quick brown fox jumps over the lazy dog"
                shadow["response"] = "the quick red fox jumped over the lazy dog"
        aa = cmp_aa = None
        if i % 4 == 0:
            aa = leg(latency_ms=p_lat)
            exact = 0 if i in (4, 64, 124, 184) else 1
            cmp_aa = dict(exact=exact, rouge_l=1.0 if exact else 0.7, edit_sim=1.0 if exact else 0.8)
        judge = None
        if 1 <= i <= 25:
            judge = ("judge-a", "win" if i <= 10 else "loss" if i <= 20 else "tie")
        ids.append(st.pair("ready", T0 + i, primary, shadow, aa=aa, cmp=cmp, cmp_aa=cmp_aa, judge=judge,
                           prompt=prompt))
    st.counters("ready", mirrored=205, stored=200, dropped_cap=3, dropped_queue_full=2)
    st.event("ready", T0 - 10, "start", "config reload")
    return ids


class TagBalance(html.parser.HTMLParser):
    """Every element the report opens is closed, in order."""
    VOID = {"meta", "br", "rect", "line", "polyline"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.errors.append((tag, self.getpos(), self.stack[-3:]))


def run(*args, ok=(0,)):
    """Run bin/shade report; sanitizer reports fail the test."""
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=66")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=67")
    p = subprocess.run([BIN, "report", *map(str, args)], capture_output=True, env=env,
                       timeout=60 * SLOW)
    err = p.stderr.decode("utf-8", "replace")
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in err, err
    assert p.returncode in ok, (p.returncode, err)
    return p.returncode, p.stdout.decode("utf-8"), err


def report_json(db, *args):
    _, out, _ = run("--db", db, "--format", "json", *args)
    return json.loads(out)


def section(db, shadow, *args):
    j = report_json(db, "--shadow", shadow, *args)
    assert [s["shadow"] for s in j["shadows"]] == [shadow]
    return j["shadows"][0]


# ------------------------------------------------------------------ tests


def test_report_no_regression_figures(env):
    db = os.path.join(env.tmp, "ready.db")
    st = Store(db)
    ids = build_ready(st)
    st.close()
    # at the default quality margin (0.10) 50 A/A pairs cannot rule out a
    # drop of status_agree (one A/A pair disagrees) or edit_sim: keep
    # collecting, and the A/A sample is what limits
    s = section(db, "ready")
    rec = s["recommendation"]
    assert (rec["action"], rec["criterion"], rec["raise_aa_percent"]) == ("keep_collecting", "quality", True), rec
    assert rec["more_pairs"] > 0 and "cannot be ruled out yet" in rec["reason"]
    # with a margin of 0.20 every readiness test passes
    s = section(db, "ready", "--quality-margin", "0.2")

    # recommendation: every no_regression criterion holds (see below)
    assert s["recommendation"]["rule"] == "no_regression", s["recommendation"]
    assert s["recommendation"]["action"] == "ready_for_canary"
    assert s["pairs"] == 200 and s["first_ts"] == T0 and s["last_ts"] == T0 + 199
    d = s["decision"]
    assert d["pairs"] == 200 and d["look_every"] == 10
    # success: 199 of 200 against 0.95, read at the looks (every 10 pairs);
    # the largest e-value so far is the one at the end (success only grows)
    near(d["ready"]["success"]["e_value_max"], e_value(199, 1, 0.95), 1e-6 * e_value(199, 1, 0.95))
    assert d["ready"]["success"]["crossed"]
    near(d["ready"]["success"]["threshold"], 20)
    # latency: 1.1x the primary in every pair where both answered, < 1.5x;
    # pair 0 timed out: counted, as not fast
    assert (d["ready"]["latency"]["for"], d["ready"]["latency"]["against"]) == (199, 1)
    # alarms: one discordant pair (primary ok, shadow timed out); 1.1x is
    # not slower than the 1.2x margin; judge 10 losses vs 10 wins
    assert (d["alarms"]["success_worse"]["for"], d["alarms"]["success_worse"]["against"]) == (1, 0)
    assert (d["alarms"]["latency_slower"]["for"], d["alarms"]["latency_slower"]["against"]) == (1, 199)
    assert not any(a["crossed"] for a in d["alarms"].values())
    assert d["first_alarm_pair"] is None and d["first_ready_pair"] % 10 == 0

    # counters: 205 = 200 + 3 + 2
    c = s["counters"]
    assert c["mirrored"] == 205 and c["stored"] == 200 and c["dropped_total"] == 5
    assert c["dropped"] == {"cap": 3, "queue_full": 2} and c["invariant_ok"] and c["unaccounted"] == 0

    # success: primary 200/200; shadow 199/200 (pair 0 timed out); aa 50/50
    sh = s["success"]["shadow"]
    assert sh["n"] == 200 and sh["ok"] == 199 and sh["failures"] == {"timeout": 1}
    near(sh["rate"], 0.995)
    lo, hi = wilson(199, 200)  # ≈ [0.97224, 0.99912], the one-look interval, for context
    near(sh["wilson_lo"], lo)
    near(sh["wilson_hi"], hi)
    # the anytime confidence sequence: wider, and at its ends the e-value
    # against the bound is 2/alpha = 40
    assert sh["cs_lo"] < lo and sh["cs_hi"] > hi
    near(e_value(199, 1, sh["cs_lo"]), 40, 1e-3)
    assert s["success"]["primary"]["ok"] == 200 and s["success"]["primary"]["failures"] == {}
    near(s["success"]["primary"]["wilson_lo"], 200 / (200 + Z * Z))  # all successes: n/(n+z²)
    assert s["success"]["primary"]["cs_hi"] == 1
    assert s["success"]["aa"]["n"] == 50 and s["success"]["aa"]["ok"] == 50

    # latency: primary v[i] = 100 + i/2, i = 0..199
    #   p50: h = 199 × 0.5 = 99.5 → v[99] + 0.5 (v[100] - v[99]) = 149.5 + 0.25 = 149.75
    #   p95: h = 189.05 → 194.5 + 0.05 × 0.5 = 194.525;  p99: h = 197.01 → 198.505
    lat = s["latency"]["primary"]["latency_ms"]
    assert lat["n"] == 200
    near(lat["p50"], 149.75)
    near(lat["p95"], 194.525)
    near(lat["p99"], 198.505)
    # shadow: 199 successful legs w[j] = 1.1 (100.5 + j/2), j = 0..198
    #   p50: h = 99 → 1.1 × 150 = 165;  p95: h = 188.1 → 1.1 × 194.5 + 0.1 × 0.55 = 214.005
    sl = s["latency"]["shadow"]["latency_ms"]
    assert sl["n"] == 199
    near(sl["p50"], 165)
    near(sl["p95"], 214.005)
    near(sl["p99"], pct([1.1 * (100 + i / 2) for i in range(1, 200)], 0.99))
    # ratio over the 199 pairs where both succeeded: shadow = 1.1 × primary
    # pair by pair, so every resample's ratio is 1.1 and so is the interval
    r = s["latency"]["ratio"]
    assert r["pairs"] == 199 and r["replicates"] == 2000
    for k in ("p50", "p95"):
        near(r[k]["ratio"], 1.1, 1e-9)
        near(r[k]["ci_lo"], 1.1, 1e-9)
        near(r[k]["ci_hi"], 1.1, 1e-9)
    # per pair: 199 ratios of 1.1 and the timeout (+inf): median 1.1
    assert r["per_pair"]["pairs"] == 200
    near(r["per_pair"]["median"], 1.1, 1e-9)
    near(r["per_pair"]["cs_lo"], 1.1, 1e-9)
    # latency confidence sequences bracket the percentiles
    lcs = s["latency"]["primary"]["latency_cs"]
    assert lcs["p50"][0] <= 149.75 <= lcs["p50"][1] and lcs["p95"][0] <= 194.525 <= lcs["p95"][1]
    # ttft and itl: constant per leg (streamed, successful legs only)
    assert s["latency"]["primary"]["ttft_ms"]["n"] == 200 and s["latency"]["shadow"]["ttft_ms"]["n"] == 199
    near(s["latency"]["primary"]["ttft_ms"]["p95"], 50)
    near(s["latency"]["shadow"]["ttft_ms"]["p50"], 60)
    near(s["latency"]["primary"]["itl_ms_mean"], 10)
    near(s["latency"]["shadow"]["itl_ms_mean"], 12)

    # usage: primary 200 × (100 in, 50 out, $0.001); shadow 199 × (100, 60, $0.0005)
    u = s["usage"]
    near(u["primary"]["tokens_out"]["mean"], 50)
    near(u["shadow"]["tokens_out"]["mean"], 60)
    assert u["shadow"]["tokens_out"]["n"] == 199
    near(u["diff"]["tokens_out_mean"], 10)
    near(u["diff"]["tokens_in_mean"], 0)
    near(u["primary"]["cost_usd"]["total"], 0.2)
    near(u["shadow"]["cost_usd"]["total"], 0.0995)
    near(u["diff"]["cost_usd_total"], 0.0995 - 0.2)
    near(u["diff"]["cost_usd_mean"], 0.0005 - 0.001)

    # comparators, shadow vs the A/A floor
    cmp = {c["name"]: c for c in s["comparators"]}
    assert s["noise_floor_known"] and s["comparisons"] == {"shadow": 200, "aa": 50}
    # status_agree: 199/200 vs 50/50
    near(cmp["status_agree"]["shadow"]["mean"], 0.995)
    near(cmp["status_agree"]["aa"]["mean"], 1.0)
    assert cmp["status_agree"]["aa"]["n"] == 50
    # exact: shadow 0 at i = 5, 15, ..., 195 → (199 - 20)/199 = 179/199; aa 46/50
    # diff = 0.89950 - 0.92 = -0.0205: under the 0.03 absolute threshold
    ex = cmp["exact"]
    assert ex["shadow"]["n"] == 199 and ex["aa"]["n"] == 50
    near(ex["shadow"]["mean"], 179 / 199)
    near(ex["aa"]["mean"], 0.92)
    near(ex["diff"], 179 / 199 - 0.92)
    # paired (A/A every 4th pair, i = 0, 4, ...): the shadow differs at
    # i = 5, 15, ... (never paired), the A/A leg at 4, 64, 124, 184: four
    # pairs where the shadow agrees better, none worse; pair 0 has no exact
    assert (ex["paired"], ex["worse"], ex["better"]) == (49, 0, 4)
    near(ex["p_value"], 1.0)
    assert not ex["beyond_noise"] and ex["direction"] is None
    assert ex["non_inferiority"]["shown"] and ex["mde"] < 0.2
    # rouge_l: (179 + 20 × 0.6)/199 = 191/199 vs (46 + 4 × 0.7)/50 = 0.976
    near(cmp["rouge_l"]["shadow"]["mean"], 191 / 199)
    near(cmp["rouge_l"]["aa"]["mean"], 0.976)
    assert cmp["rouge_l"]["kind"] == "real" and not cmp["rouge_l"]["beyond_noise"]
    assert cmp["json_valid"]["shadow"]["n"] == 0 and cmp["json_valid"]["shadow"]["mean"] is None
    assert not any(c["beyond_noise"] for c in s["comparators"])

    # judge: 10 win, 10 loss, 5 tie → P(X >= 10 | 20) = 0.588099
    jd = s["judge"]
    assert (jd["win"], jd["loss"], jd["tie"], jd["inconsistent"], jd["error"]) == (10, 10, 5, 0, 0)
    assert jd["judges"] == ["judge-a"] and jd["decisive"] == 20 and jd["total"] == 25
    near(jd["win_share"], 0.5)
    assert e_sign(10, 10) < 1  # 10 vs 10: the e-value is below 1, the p-value capped at 1
    assert jd["p_better"] == 1
    near(jd["inconsistency_rate"], 0)
    assert jd["decisive_needed"] is None  # a win share of ½ never becomes significant

    # worst: the status disagreement (pair 0), then rouge_l 0.6 newest first
    w = s["worst"]
    assert [e["pair_id"] for e in w] == [ids[0], ids[195], ids[185], ids[175], ids[165]]
    assert w[0]["status_agree"] is False and w[0]["shadow"]["error"] == "timeout"
    assert "<script>" in w[0]["prompt"]  # raw in JSON (escaped as JSON text)
    near(w[1]["rouge_l"], 0.6)
    assert w[1]["primary"]["response"] == "the quick brown fox jumps over the lazy dog"
    assert len(report_json(db, "--worst", 2)["shadows"][0]["worst"]) == 2
    assert report_json(db, "--worst", 0)["shadows"][0]["worst"] == []
    assert s["events"] == [{"ts": T0 - 10, "kind": "start", "detail": "config reload"}]

    # the text report says the same
    _, out, _ = run("--db", db, "--quality-margin", "0.2")
    assert "ready_for_canary  (rule no_regression)" in out, out
    assert "mirrored 205, stored 200, dropped 5 (cap 3, queue_full 2): mirrored = stored + dropped" in out
    cs = "[%.2f%%, %.2f%%]" % (100 * sh["cs_lo"], 100 * sh["cs_hi"])
    assert re.search(r"shadow\s+99\.50%\s+" + re.escape(cs) + r"\s+200\s+timeout 1", out), out
    assert re.search(r"primary\s+149\.8\s+194\.5\s+198\.5\s+200", out), out
    assert re.search(r"exact\s+0\.899\s+199\s+0\.920\s+50\s+49\s+0/4\s+\S+\s+within noise: shown within 0\.20",
                     out), out
    assert re.search(r"success\s+199 of 200 ok, above 95\.00%\s+269\.6\s+20\s+shown", out), out
    assert "\x1b" not in out and "<script>" in out  # plain text, control characters dropped


def test_report_rules_fire(env):
    db = os.path.join(env.tmp, "rules.db")
    st = Store(db)

    # insufficient_data: 10 pairs < 30 → 20 more
    simple(st, "few", 10, aa_every=2)

    # success_rate: the shadow fails 10 of 100 (6 timeouts, 4 http_5xx)
    # where the primary never does: 10 discordant pairs against 0
    for i in range(100):
        bad = fail("timeout") if i < 6 else fail("http_5xx", status=502) if i < 10 else None
        st.pair("flaky", T0 + i, leg(latency_ms=100.0), bad or leg(latency_ms=100.0),
                cmp=dict(status_agree=0 if bad else 1))
    st.counters("flaky", mirrored=110, stored=100, dropped_cap=4)  # 6 unaccounted

    # latency_ratio: shadow = 2 × primary → p50 ratio 2.0 > 1.5
    simple(st, "slow", 50, ratio=2.0, aa_every=5)

    # quality_regression: exact, shadow 70/100 (0 when i % 10 < 3) vs aa 39/40
    for i in range(100):
        aa = i % 5 < 2
        st.pair("worse", T0 + i, leg(), leg(), aa=leg() if aa else None,
                cmp=dict(exact=0 if i % 10 < 3 else 1),
                cmp_aa=dict(exact=0 if i == 0 else 1) if aa else None)

    # a judge at 12 win, 3 loss, 5 tie, 2 inconsistent, 1 error
    outcomes = ["win"] * 12 + ["loss"] * 3 + ["tie"] * 5 + ["inconsistent"] * 2 + ["error"]
    for i in range(60):
        aa = i % 3 == 0
        judge = (("judge-a" if i < 10 else "judge-b"), outcomes[i]) if i < len(outcomes) else None
        st.pair("judged", T0 + i, leg(), leg(), aa=leg() if aa else None, cmp=dict(exact=1),
                cmp_aa=dict(exact=1) if aa else None, judge=judge)

    # keep_collecting: 40/40 successes, E(40, 0, 0.95) < 20: not yet
    # shown above 0.95
    young = simple(st, "young", 40, aa_every=4)
    # and a judge at 8 wins, 2 losses
    for i, pid in enumerate(young[:10]):
        st.db.execute("INSERT INTO judgements (pair_id, judge, outcome, ts) VALUES (?,?,?,?)",
                      (pid, "judge-a", "win" if i < 8 else "loss", T0))

    # keep_collecting on latency: 80/80 successes, primary always 100 ms,
    # shadow 100 ms for 41 pairs and 200 ms for 39: faster than 1.5x in 41 of
    # 80 pairs is no evidence that it is in most, and slower than 1.2x in 39
    # of 80 no evidence of the reverse.  The bootstrap (one look, for
    # context): sorted, h = 79 × 0.5 = 39.5 falls between two 100s, so the
    # p50 ratio is 1.0; a resample draws 41+ of the slow pairs about a third
    # of the time, making its ratio 2.0: the interval is [1.0, 2.0].
    for i in range(80):
        aa = i % 4 == 0
        st.pair("jittery", T0 + i, leg(latency_ms=100.0), leg(latency_ms=100.0 if i % 2 == 0 or i == 79 else 200.0),
                aa=leg() if aa else None, cmp=dict(exact=1), cmp_aa=dict(exact=1) if aa else None)

    # no A/A legs: 200 good pairs, but the noise floor is unknown
    simple(st, "noaa", 200)
    st.close()

    s = section(db, "few")
    assert s["recommendation"]["rule"] == "insufficient_data"
    assert s["recommendation"]["action"] == "keep_collecting"
    assert s["recommendation"]["more_pairs"] == 20 and s["recommendation"]["criterion"] == "min_pairs"

    s = section(db, "flaky")
    assert (s["recommendation"]["rule"], s["recommendation"]["action"]) == ("success_rate", "investigate")
    sh = s["success"]["shadow"]
    assert sh["ok"] == 90 and sh["failures"] == {"timeout": 6, "http_5xx": 4}
    lo, hi = wilson(90, 100)
    near(sh["wilson_lo"], lo)
    near(sh["wilson_hi"], hi)
    # the 10 discordant pairs all come first: the looks at 10, 20, ... see
    # 10 vs 0, E = 2^11 (1 - 2^-11)/11 = 2047/11 = 186.09 >= 1/(0.15 x 0.05)
    a = s["decision"]["alarms"]["success_worse"]
    assert (a["for"], a["against"], a["crossed"]) == (10, 0, True)
    near(a["e_value_max"], 2047 / 11, 1e-6)
    near(e_sign(10, 0), 2047 / 11, 1e-9)
    near(a["always_valid_p"], 11 / 2047)
    near(a["threshold"], 1 / (0.15 * 0.05), 1e-9)
    assert s["decision"]["first_alarm_pair"] == 10
    assert not s["counters"]["invariant_ok"] and s["counters"]["unaccounted"] == 6
    _, out, _ = run("--db", db, "--shadow", "flaky")
    assert "investigate  (rule success_rate)" in out and "MISMATCH" in out and "+6 unaccounted" in out
    assert "10 vs 0 discordant pairs" in out

    s = section(db, "slow")
    assert (s["recommendation"]["rule"], s["recommendation"]["action"]) == ("latency_ratio", "too_slow")
    # primary 100..149: p50 h = 24.5 → 124.5; shadow 249
    near(s["latency"]["primary"]["latency_ms"]["p50"], 124.5)
    near(s["latency"]["shadow"]["latency_ms"]["p50"], 249)
    near(s["latency"]["ratio"]["p50"]["ratio"], 2.0)
    near(s["latency"]["ratio"]["per_pair"]["median"], 2.0)
    assert s["decision"]["alarms"]["latency_slower"]["for"] == 50
    assert s["decision"]["first_alarm_pair"] == 10  # E(10, 0, 1/2) = 2047/11 >= 133.3

    s = section(db, "worse")
    rec = s["recommendation"]
    assert (rec["rule"], rec["action"], rec["comparators"]) == ("quality_regression", "investigate", ["exact"])
    ex = {c["name"]: c for c in s["comparators"]}["exact"]
    # paired (i % 5 < 2: 40 pairs): the shadow misses when i % 10 < 3, so
    # at i % 10 in {0, 1}: 20 pairs, one of them (i = 0) a tie with the A/A
    # miss: 19 worse, 0 better
    assert (ex["paired"], ex["worse"], ex["better"]) == (40, 19, 0)
    near(ex["e_value"], e_sign(19, 0), 1e-6 * e_sign(19, 0))
    near(ex["p_value"], 1 / e_sign(19, 0), 1e-9)
    near(ex["diff"], 0.70 - 0.975)
    assert ex["beyond_noise"] and ex["direction"] == "worse"
    _, out, _ = run("--db", db, "--shadow", "worse")
    assert "WORSE than the noise floor" in out and "investigate  (rule quality_regression)" in out

    s = section(db, "judged")
    # the judge prefers the shadow, but that alone never made it ready
    # (the old judge_better rule did, before success and latency were shown)
    assert s["recommendation"]["action"] == "keep_collecting", s["recommendation"]
    jd = s["judge"]
    assert (jd["win"], jd["loss"], jd["tie"], jd["inconsistent"], jd["error"]) == (12, 3, 5, 2, 1)
    assert jd["judges"] == ["judge-a", "judge-b"] and jd["decisive"] == 15 and jd["total"] == 23
    # 12 vs 3: E = 12! 3! / 16! x P(Bin(16, 1/2) >= 4) x 2^16 = 64839/7280
    near(e_sign(12, 3), 64839 / 7280, 1e-9)
    near(jd["p_better"], 7280 / 64839)
    assert jd["p_worse"] == 1
    near(jd["win_share"], 0.8)
    near(e_value(12, 3, jd["win_share_lo"]), 40, 1e-3)  # the confidence sequence's end
    near(jd["inconsistency_rate"], 2 / 22)  # inconsistent / (win + loss + tie + inconsistent)
    assert jd["decisive_needed"] > 15

    s = section(db, "young")
    rec = s["recommendation"]
    assert (rec["rule"], rec["action"]) == ("keep_collecting", "keep_collecting")
    assert rec["criterion"] in ("success_ci", "quality"), rec
    assert e_value(40, 0, 0.95) < 20 and not s["decision"]["ready"]["success"]["crossed"]
    # planned for an 80 % chance at a pessimistic rate (the one-sided 80 %
    # Wilson bound 40/(40 + 0.8416²) = 0.98260): far more than the 33 the
    # old rule said from the point estimate, which gave even odds
    assert rec["more_pairs"] > 100, rec
    near(s["judge"]["p_better"], 1 / e_sign(8, 2), 1e-9)

    s = section(db, "jittery")
    rec, r = s["recommendation"], s["latency"]["ratio"]
    assert (rec["rule"], rec["criterion"], rec["more_pairs"]) == ("keep_collecting", "latency_ci", None), rec
    d = s["decision"]
    assert (d["ready"]["latency"]["for"], d["ready"]["latency"]["against"]) == (41, 39)
    assert (d["alarms"]["latency_slower"]["for"], d["alarms"]["latency_slower"]["against"]) == (39, 41)
    near(r["p50"]["ratio"], 1.0)
    near(r["p50"]["ci_lo"], 1.0)
    near(r["p50"]["ci_hi"], 2.0)
    near(r["per_pair"]["median"], 1.0)
    near(r["per_pair"]["cs_lo"], 1.0)
    near(r["per_pair"]["cs_hi"], 2.0)

    s = section(db, "noaa")
    rec = s["recommendation"]
    assert (rec["rule"], rec["criterion"], rec["more_pairs"]) == ("keep_collecting", "noise_floor", None)
    assert not s["noise_floor_known"] and s["comparisons"]["aa"] == 0
    assert s["decision"]["ready"]["success"]["crossed"] and s["decision"]["ready"]["latency"]["crossed"]
    _, out, _ = run("--db", db, "--shadow", "noaa")
    assert "the noise floor is unknown" in out

    # rule thresholds from the command line: 2.0x is within a 2.5 margin
    s = section(db, "slow", "--latency-margin", "2.5")
    assert s["recommendation"]["rule"] != "latency_ratio"
    s = section(db, "few", "--min-pairs", "5")
    assert s["recommendation"]["rule"] != "insufficient_data"
    # a stricter alpha: 10 vs 0 (186) is below 1/(0.15 x 0.001)
    s = section(db, "flaky", "--alpha", "0.001")
    assert s["recommendation"]["rule"] != "success_rate"

    # every shadow, one section each, sorted by name
    j = report_json(db)
    assert [s["shadow"] for s in j["shadows"]] == ["few", "flaky", "jittery", "judged", "noaa", "slow", "worse",
                                                   "young"]
    assert j["rules"]["success_min"] == 0.95 and j["rules"]["min_pairs"] == 30
    assert j["rules"]["latency_margin"] == 1.2 and j["rules"]["quality_margin"] == 0.1
    assert j["rules"]["alpha"] == 0.05 and j["rules"]["look_every"] == 10
    assert j["version"] == 2  # the decision changed meaning (doc/shadow-report.md)
    _, out, _ = run("--db", db)
    assert out.count("== shadow ") == 8


def test_report_window_filters(env):
    db = os.path.join(env.tmp, "timed.db")
    st = Store(db)
    now = time.time()
    # 40 pairs over the last two hours, 180 s apart, 90 s off the hour
    # boundaries: i < 20 is older than 1 h, and its shadow leg failed;
    # i >= 20 is newer and succeeded
    cut = now - 7200 + 20 * 180  # = now - 3600
    for i in range(40):
        ts = now - 7200 + i * 180 + 90
        st.pair("timed", ts, leg(), fail("timeout") if i < 20 else leg(), cmp=dict(status_agree=int(i >= 20)))
    simple(st, "other", 35, ts0=now - 100)
    st.close()

    s = section(db, "timed")
    assert s["pairs"] == 40 and s["success"]["shadow"]["ok"] == 20
    assert s["recommendation"]["rule"] == "success_rate"
    iso = datetime.datetime.fromtimestamp(math.floor(cut), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for since in ("1h", "60m", str(int(cut)), iso):
        s = section(db, "timed", "--since", since)
        assert s["pairs"] == 20 and s["success"]["shadow"]["ok"] == 20, (since, s["pairs"])
        assert s["success"]["shadow"]["failures"] == {}
    j = report_json(db, "--shadow", "timed", "--since", "1h")
    near(j["query"]["since"], cut, 5)
    # newest 10 pairs
    s = section(db, "timed", "--max-pairs", 10)
    assert s["pairs"] == 10 and s["success"]["shadow"]["ok"] == 10
    near(s["first_ts"], now - 7200 + 30 * 180 + 90, 1e-3)
    # --since later than everything: zero pairs, still a section
    s = section(db, "timed", "--since", "1s")
    assert s["pairs"] == 0 and s["recommendation"]["more_pairs"] == 30
    assert s["success"]["shadow"]["rate"] is None
    # --shadow picks one; the other is only in the full report
    assert [x["shadow"] for x in report_json(db)["shadows"]] == ["other", "timed"]
    s = section(db, "other")
    assert s["pairs"] == 35
    # --since start: from the shadow's newest 'start' event, as the live
    # analysis counts (a resume restarts the anytime-valid tests)
    st = Store(db)
    st.event("timed", now - 5000, "start", "admin API")
    st.event("timed", cut, "start", "admin API")
    st.close()
    s = section(db, "timed", "--since", "start")
    assert s["pairs"] == 20 and s["success"]["shadow"]["failures"] == {}
    near(s["analysis_start"], cut, 1e-6)
    assert s["decision"]["pairs"] == 20 and not s["decision"]["alarms"]["success_worse"]["crossed"]
    assert report_json(db, "--shadow", "timed", "--since", "start")["query"]["from_start"] is True
    # an unknown shadow is an error naming the known ones
    rc, _, err = run("--db", db, "--shadow", "nope", ok=(1,))
    assert "no shadow named 'nope'" in err and "'timed'" in err


def test_report_html_escaped_with_svg(env):
    db = os.path.join(env.tmp, "ready.db")
    st = Store(db)
    build_ready(st)
    st.close()
    out_file = os.path.join(env.tmp, "report.html")
    _, out, _ = run("--db", db, "--format", "html", "--out", out_file, "--quality-margin", "0.2")
    assert out == ""
    with open(out_file, encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    tb = TagBalance()
    tb.feed(page)
    assert tb.stack == [] and tb.errors == [], (tb.stack, tb.errors)
    # user content is escaped: the prompt's <script> and the answers' <b>
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; why?" in page
    assert "&lt;b&gt;42&lt;/b&gt; &amp; more" in page and "<b>42</b>" not in page
    # the prompt is shown as role: content lines
    assert "system: be brief\nuser: &lt;script&gt;" in page
    # latency distributions as inline SVG, no external assets
    assert page.count("<svg") == 2 and "<polyline" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page
    # word-level differences of the answers
    assert "the quick <del>brown</del> fox <del>jumps</del> over the lazy dog" in page
    assert "the quick <ins>red</ins> fox <ins>jumped</ins> over the lazy dog" in page
    assert "ready for canary" in page and "no_regression" in page


def test_report_json_text_content_escaped(env):
    db = os.path.join(env.tmp, "odd.db")
    st = Store(db)
    # control characters, an ANSI escape, invalid UTF-8 and quotes in stored text
    nasty = 'line1\nline2\t"q" \x1b[31mred\x1b[0m \\ end'
    for i in range(3):
        st.pair('we"ird', T0 + i, leg(response=nasty), leg(response=nasty + " more"),
                cmp=dict(status_agree=1, exact=0, rouge_l=0.5), prompt=nasty)
    st.db.execute("UPDATE legs SET response = CAST(X'6869FF21' AS TEXT) WHERE leg = 'shadow' AND pair_id = 1")
    st.close()
    _, out, _ = run("--db", db, "--format", "json")
    j = json.loads(out)
    s = j["shadows"][0]
    assert s["shadow"] == 'we"ird'
    resp = {e["pair_id"]: e for e in s["worst"]}
    assert resp[2]["primary"]["response"] == nasty
    assert resp[1]["shadow"]["response"] == "hi\ufffd!"  # invalid byte replaced
    _, out, _ = run("--db", db)
    assert "\x1b" not in out and "line1 line2 \"q\" [31mred[0m" in out
    _, out, _ = run("--db", db, "--format", "html")
    assert "\x1b" not in out and "\ufffd" in out
    tb = TagBalance()
    tb.feed(out)
    assert tb.stack == [] and tb.errors == [], (tb.stack, tb.errors)


def test_report_errors(env):
    missing = os.path.join(env.tmp, "missing.db")
    rc, out, err = run("--db", missing, ok=(1,))
    assert "No such file" in err and out == ""
    assert not os.path.exists(missing) and not os.path.exists(missing + "-wal")
    # not a database
    junk = os.path.join(env.tmp, "junk.db")
    with open(junk, "wb") as f:
        f.write(b"this is not sqlite" * 100)
    rc, _, err = run("--db", junk, ok=(1,))
    assert "junk.db" in err
    # a database without the tables
    empty = os.path.join(env.tmp, "empty.db")
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    rc, _, err = run("--db", empty, ok=(1,))
    assert "no such table" in err
    # a store with no shadows yet: an empty report, not an error
    fresh = os.path.join(env.tmp, "fresh.db")
    Store(fresh).close()
    assert report_json(fresh)["shadows"] == []
    _, out, _ = run("--db", fresh)
    assert "no shadows recorded" in out

    for args in (
        [],                                     # no --db
        ["--db"],                               # no value
        ["--db", fresh, "--format", "xml"],
        ["--db", fresh, "--since", "yesterday"],
        ["--db", fresh, "--since", "2026-13-01T00:00:00Z"],
        ["--db", fresh, "--since", "5x"],
        ["--db", fresh, "--worst", "-1"],
        ["--db", fresh, "--max-pairs", "many"],
        ["--db", fresh, "--success-min", "1.5"],
        ["--db", fresh, "--bogus", "1"],
        ["--db", fresh, "stray"],
    ):
        rc, out, err = run(*args, ok=(2,))
        assert err and out == "", args
    rc, out, _ = run("--help")
    assert "usage: shade report" in out and "--since" in out
    # unwritable --out
    rc, _, err = run("--db", fresh, "--out", os.path.join(env.tmp, "no", "such", "dir.txt"), ok=(1,))
    assert "No such file" in err
