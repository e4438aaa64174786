"""Observability deploy files against the real binary and the real tools:
promtool's lint of the live /metrics (with a shadow, a judge, a fallback and
upstream errors, so those families show), the alert rules and their unit
tests, a Prometheus server scraping the gateway and evaluating the rules,
and the Grafana dashboard's expressions.

promtool and prometheus (Debian package `prometheus`) are required: a missing
tool fails these tests, it does not skip them."""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import (ROOT, SLOW, Proc, basic_config, chat, free_port, metrics, post, request,
                     wait_port)

DEPLOY = os.path.join(ROOT, "deploy")
ALERTS = os.path.join(DEPLOY, "prometheus", "alerts.yml")
ALERTS_TEST = os.path.join(DEPLOY, "prometheus", "alerts_test.yml")
PROM_CONFIG = os.path.join(DEPLOY, "prometheus", "prometheus.yml")
DASHBOARD = os.path.join(DEPLOY, "grafana", "shade-dashboard.json")

# The metric families the rules and the dashboard may use (doc/metrics.md,
# doc/shadow.md; some are being added).
COUNTERS = {
    "shade_requests_total", "shade_input_tokens_total", "shade_output_tokens_total",
    "shade_cost_usd_total", "shade_upstream_errors_total", "shade_retries_total",
    "shade_fallbacks_total", "shade_backend_ejections_total", "shade_shed_total",
    "shade_admin_auth_failures_total", "shade_shadow_mirrored_total",
    "shade_shadow_pairs_stored_total", "shade_shadow_dropped_total", "shade_shadow_skipped_total",
    "shade_shadow_legs_total",
}
GAUGES = {"shade_backend_up", "shade_queue_depth", "shade_shadow_in_flight", "shade_shadow_state"}
HISTOGRAMS = {
    "shade_request_duration_seconds", "shade_time_to_first_token_seconds",
    "shade_time_per_output_token_seconds", "shade_request_input_tokens",
    "shade_gateway_overhead_seconds", "shade_queue_wait_seconds",
}
KNOWN = COUNTERS | GAUGES | HISTOGRAMS
LABELS = {"model", "variant", "backend", "code", "class", "kind", "to", "reason", "shadow", "leg",
          "outcome", "state", "le", "job", "instance"}
SHADOW_FAMILIES = {"shade_shadow_mirrored_total", "shade_shadow_pairs_stored_total",
                   "shade_shadow_dropped_total", "shade_shadow_skipped_total", "shade_shadow_legs_total",
                   "shade_shadow_in_flight", "shade_shadow_state"}


def tool(name):
    path = shutil.which(name)
    assert path, f"{name} not found: install the Debian package prometheus (scripts/deps.sh)"
    return path


def run(args, stdin=None, timeout=60, cwd=None):
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout * SLOW, cwd=cwd)


def out(r):
    return (r.stdout + r.stderr).decode("utf-8", "replace").strip()


def wait_until(cond, timeout=10, what="condition"):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------- PromQL: which metric families and labels an expression uses ----------

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}


def promql_names(expr):
    """(metric names, label names) an expression refers to."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    labels = set()
    for body in re.findall(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s):
        labels |= {l.strip() for l in body.split(",") if l.strip()}
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"(?<![A-Za-z0-9_:])(?:[0-9]+(?:ms|s|m|h|d|w|y))+\b", " ", s)   # durations
    s = re.sub(r"(?<![A-Za-z0-9_:])[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        tok = m.group(0)
        if tok.lower() in KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue
        names.add(tok)
    return names, labels


def family(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def check_expr(expr, where, allowed_extra=()):
    names, labels = promql_names(expr)
    unknown = {n for n in names if family(n) not in KNOWN and n not in allowed_extra}
    assert not unknown, f"{where}: unknown metric families {sorted(unknown)} in {expr!r}"
    for n in names:
        if n.endswith(("_bucket", "_sum", "_count")) and family(n) == n:
            raise AssertionError(f"{where}: {n} is not a series of a known histogram")
    bad = labels - LABELS
    assert not bad, f"{where}: unknown labels {sorted(bad)} in {expr!r}"
    return {family(n) for n in names}


def test_promql_names_helper(env):
    names, labels = promql_names(
        'histogram_quantile(0.95, sum by (model, le) (rate(shade_request_duration_seconds_bucket'
        '{model=~"$model",variant!~"shadow|aa"}[$__rate_interval]))) / on (model) group_left '
        'sum(shade_x_total offset 5m) > 1e3 and up == 0 unless label_replace(foo, "a", "$1", "b", "(.+)")')
    assert names == {"shade_request_duration_seconds_bucket", "shade_x_total", "up", "foo"}, names
    assert labels == {"model", "le", "variant"}, labels


# ---------- (a) promtool's lint of the live /metrics ----------

def lint_config(primary, cand, flaky, judge, db):
    return f"""server:
  listen: 127.0.0.1:{{PORT}}
  workers: 2
  log_level: warn
models:
  - name: demo
    price: {{ input: 1.0, output: 2.0 }}
    backends:
      - url: http://127.0.0.1:{primary}
        name: p0
        health_check: {{ interval: 100ms }}
  - name: flaky
    fallback: [demo]
    backends:
      - url: http://127.0.0.1:{flaky}
        name: f0
  - name: judge
    backends:
      - url: http://127.0.0.1:{judge}
        name: j0
shadows:
  - name: cand
    model: demo
    aa_percent: 50
    judge: {{ model: judge, sample: 100 }}
    backends:
      - url: http://127.0.0.1:{cand}
        name: s0
shadow_store:
  path: {db}
admin:
  key_env: SHADE_TEST_PROM_ADMIN_KEY
"""


def test_promtool_check_metrics_on_live_output(env):
    promtool = tool("promtool")
    primary = env.sim("--ttft-ms", 0, "--tps", 0, "--seed", 1)
    cand = env.sim("--ttft-ms", 0, "--tps", 0, "--seed", 2, "--max-tokens", 20)
    flaky = env.sim("--error-rate", 1)
    judge = env.sim("--judge", "--ttft-ms", 0, "--tps", 0, "--max-tokens", 200)
    db = os.path.join(env.tmp, "pairs.db")
    gw = env.gateway(lint_config(primary, cand, flaky, judge, db),
                     env={"SHADE_TEST_PROM_ADMIN_KEY": "s3cret"})
    key = {"x-shade-admin-key": "s3cret"}
    for i in range(4):
        assert post(gw, chat(f"Tell me about topic {i} in some detail"))[0] == 200
    for i in range(2):
        assert post(gw, chat(f"stream {i}", stream=True))[0] == 200
    st, h, _ = post(gw, {"model": "flaky", "messages": [{"role": "user", "content": "x"}]})
    assert st == 200 and h.get("x-shade-fallback") == "demo"
    assert post(gw, {"model": "nope", "messages": []})[0] == 404
    assert post(gw, b"{not json")[0] == 400
    assert request(gw, "GET", "/admin/shadows", headers={"authorization": "Bearer wrong"})[0] == 401

    def settled():
        st, _, body = request(gw, "GET", "/admin/shadows", headers=key)
        c = json.loads(body)["shadows"][0]["counters"]
        return c["mirrored"] >= 6 and c["mirrored"] == c["stored"] + c["dropped"]
    wait_until(settled, what="mirrored pairs to settle")
    wait_until(lambda: any(k.startswith("shade_health_checks_total") for k in metrics(gw)),
               what="a health check")

    st, hdrs, body = request(gw, "GET", "/metrics")
    assert st == 200
    text = body.decode()
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert SHADOW_FAMILIES <= families, sorted(SHADOW_FAMILIES - families)
    assert "shade_upstream_errors_total{" in text and "shade_fallbacks_total{" in text

    r = run([promtool, "check", "metrics"], stdin=body)
    complaints = [l for l in out(r).splitlines() if l.strip()]
    if r.returncode != 0 or complaints:
        # show every complaint with the exposition lines it is about: lint
        # problems start with the family's name ("NAME no help text"), parse
        # errors name a line ("text format parsing error in line N: ...")
        detail = []
        all_lines = text.splitlines()
        for c in complaints:
            m = re.search(r"\bline (\d+)", c)
            if m and 0 < int(m.group(1)) <= len(all_lines):
                lines = [f"line {m.group(1)}: {all_lines[int(m.group(1)) - 1]}"]
            else:
                name = c.split()[0]
                lines = [l for l in all_lines
                         if re.match(rf"(# (HELP|TYPE) )?{re.escape(name)}(_bucket|_sum|_count)?[{{ ]", l)]
            detail.append(c + "".join("\n    " + l for l in lines[:8]))
        raise AssertionError(f"promtool check metrics (exit {r.returncode}) complains about /metrics:\n"
                             + "\n".join(detail or [out(r)]))


# ---------- (b) the rules: syntax, unit tests, coverage ----------

def alert_names():
    with open(ALERTS) as f:
        return re.findall(r"^\s*- alert:\s*(\S+)", f.read(), re.M)


def test_alert_rules_check_and_unit_tests(env):
    promtool = tool("promtool")
    r = run([promtool, "check", "rules", ALERTS])
    assert r.returncode == 0, out(r)
    names = alert_names()
    assert f"SUCCESS: {len(names)} rules found" in out(r), out(r)
    r = run([promtool, "test", "rules", ALERTS_TEST])
    assert r.returncode == 0 and "SUCCESS" in out(r), out(r)
    r = run([promtool, "check", "config", PROM_CONFIG])
    assert r.returncode == 0, out(r)

    # every alert is tested both firing and not firing
    cases = {}
    current = None
    with open(ALERTS_TEST) as f:
        for line in f:
            m = re.match(r"\s*alertname:\s*(\S+)", line)
            if m:
                current = m.group(1)
            m = re.match(r"\s*exp_alerts:\s*(\[\])?\s*$", line)
            if m and current:
                cases.setdefault(current, set()).add("quiet" if m.group(1) else "firing")
                current = None
    for n in names:
        assert cases.get(n) == {"quiet", "firing"}, f"{n}: tested {sorted(cases.get(n, []))}"
    assert set(cases) <= set(names), sorted(set(cases) - set(names))

    # the rules use only known families (and the scrape's own `up`)
    with open(ALERTS) as f:
        text = f.read()
    used = set()
    for block in re.split(r"^\s*- alert:", text, flags=re.M)[1:]:
        name = block.split()[0]
        m = re.search(r"expr:\s*\|\n((?:[ ]{10,}.*\n)+)|expr:\s*(.+)\n", block)
        assert m, f"{name}: no expr"
        used |= check_expr(m.group(1) or m.group(2), name, allowed_extra={"up"})
    assert {"shade_shadow_legs_total", "shade_shadow_state", "shade_request_input_tokens",
            "shade_admin_auth_failures_total", "shade_request_duration_seconds"} <= used, used


# ---------- (c) a real Prometheus scraping the gateway ----------

def prom_get(port, path, **params):
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5 * SLOW) as resp:
        return json.loads(resp.read())


def test_prometheus_scrapes_the_gateway(env):
    prometheus = tool("prometheus")
    primary = env.sim("--ttft-ms", 0, "--tps", 0)
    gw = env.gateway(basic_config(primary))
    port = free_port()
    cfg = os.path.join(env.tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {ALERTS}\n"
                "scrape_configs:\n  - job_name: shade\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{gw}']\n")
    prom = Proc([prometheus, f"--config.file={cfg}", f"--storage.tsdb.path={os.path.join(env.tmp, 'tsdb')}",
                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"], f"prom{port}")
    env.procs.append(prom)
    try:
        wait_port(port, prom, timeout=20)

        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, OSError):
                return False
        wait_until(ready, timeout=20, what="prometheus ready")

        sent = 0
        for i in range(5):
            assert post(gw, chat(f"scraped {i}"))[0] == 200
            sent += 1
        for i in range(2):
            assert post(gw, chat(f"scraped stream {i}", stream=True))[0] == 200
            sent += 1

        last = {}

        def reads_back():
            res = prom_get(port, "/api/v1/query", query='sum(shade_requests_total{model="demo"})')
            assert res["status"] == "success", res
            last["result"] = res["data"]["result"]
            return bool(last["result"]) and float(last["result"][0]["value"][1]) == sent
        try:
            wait_until(reads_back, timeout=30, what=f"prometheus to read back {sent} requests")
        except AssertionError:
            raise AssertionError(f"last result {last.get('result')}; log:\n{prom.output()[-2000:]}")

        # the rules loaded into a real server and evaluate without errors
        def evaluated():
            groups = prom_get(port, "/api/v1/rules")["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else None
        rules = wait_until(evaluated, timeout=15, what="every rule evaluated")
        assert sorted(r["name"] for r in rules) == sorted(alert_names())
        for r in rules:
            assert r["type"] == "alerting" and not r.get("lastError"), r
            assert r["duration"] > 0, f"{r['name']}: no for:"
            assert r["labels"].get("severity") in ("critical", "warning"), r
            assert r["annotations"].get("summary") and r["annotations"].get("description"), r
            # a healthy gateway under light load raises nothing
            assert r["state"] == "inactive", r

        # every dashboard query runs on the real server; the traffic shows
        # (a rate needs two samples of the series)
        def scrapes():
            res = prom_get(port, "/api/v1/query",
                           query='count_over_time(shade_requests_total{model="demo"}[30s])')
            return res["data"]["result"] and float(res["data"]["result"][0]["value"][1]) >= 2
        wait_until(scrapes, timeout=15, what="two scrapes of the requests")
        answered = {}
        for title, e in dashboard_exprs():
            try:
                res = prom_get(port, "/api/v1/query", query=grafana_vars(e, "30s"))
            except urllib.error.HTTPError as err:
                raise AssertionError(f"{title}: {e}: {err.read().decode()}")
            assert res["status"] == "success", (title, res)
            answered[title] = answered.get(title, 0) + len(res["data"]["result"])
        assert answered["Requests/s by model, variant and class"] >= 1, answered
    finally:
        rc = prom.stop()
    assert rc == 0, f"prometheus exited {rc}:\n{prom.output()[-2000:]}"


# ---------- (d) the Grafana dashboard ----------

def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def dashboard_exprs():
    with open(DASHBOARD) as f:
        d = json.load(f)
    return [(p["title"], t["expr"]) for p in all_panels(d["panels"]) for t in p.get("targets", [])]


def grafana_vars(expr, rate="5m"):
    """An expression as Grafana sends it with every model and shadow selected."""
    return expr.replace("$__rate_interval", rate).replace("$model", ".*").replace("$shadow", ".*")


def test_grafana_dashboard(env):
    promtool = tool("promtool")
    with open(DASHBOARD) as f:
        d = json.load(f)
    assert d["schemaVersion"] >= 36 and d["uid"] and d["title"]
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["model"]["type"] == "query"
    exprs = []
    for v in variables.values():
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
            assert m and m.group(1) in KNOWN and m.group(2) in LABELS, q
    ids = set()
    used = set()
    for p in all_panels(d["panels"]):
        assert p["id"] not in ids, f"duplicate panel id {p['id']}"
        ids.add(p["id"])
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            used |= check_expr(t["expr"], p["title"])
            exprs.append((p["title"], t["expr"]))
    # what the dashboard must show
    assert {"shade_requests_total", "shade_request_duration_seconds", "shade_time_to_first_token_seconds",
            "shade_time_per_output_token_seconds", "shade_input_tokens_total", "shade_output_tokens_total",
            "shade_upstream_errors_total", "shade_cost_usd_total", "shade_gateway_overhead_seconds",
            "shade_queue_depth", "shade_queue_wait_seconds", "shade_backend_up",
            "shade_shadow_mirrored_total", "shade_shadow_pairs_stored_total", "shade_shadow_dropped_total",
            "shade_shadow_legs_total", "shade_shadow_state"} <= used, sorted(KNOWN - used)
    # every expression is valid PromQL: promtool parses them as recording rules
    rules = os.path.join(env.tmp, "dashboard_rules.yml")
    with open(rules, "w") as f:
        f.write("groups:\n  - name: dashboard\n    rules:\n")
        for i, (title, e) in enumerate(exprs):
            e = grafana_vars(e)
            f.write(f"      - record: dashboard:expr:{i}\n        expr: {json.dumps(e)}\n")
    r = run([promtool, "check", "rules", rules])
    assert r.returncode == 0, out(r)
