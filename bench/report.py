#!/usr/bin/env python3
"""report.py — turn bench/run.sh's raw result lines into the results table.

usage: report.py RAW_FILE

RAW_FILE holds `key=value` lines written by run.sh:
    META key=value ...                   (settings, printed in the header)
    LOAD round=R target=T rps=.. p50_us=.. p99_us=.. errors=.. status_errors=..
    UNLOADED target=T rps=.. p50_us=.. p99_us=.. ...
    TTFT T n=.. errors=.. median_us=.. p99_us=.. ...
Several LOAD rounds per target are reduced to their median.
"""
import statistics
import sys

TARGETS = ("direct", "shade", "nginx")


def kv(fields):
    out = {}
    for f in fields:
        k, sep, v = f.partition("=")
        if sep:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def ms(us):
    return "%.3f ms" % (us / 1000.0)


def fmt_us(us):
    return "%+.0f µs" % us


def verdict(ok):
    return "MET" if ok else "NOT MET"


def main(path):
    meta, load, unloaded, ttft = {}, {}, {}, {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            tag = parts[0]
            if tag == "META":
                meta.update({k: v for k, _, v in (p.partition("=") for p in parts[1:])})
            elif tag == "LOAD":
                d = kv(parts[1:])
                load.setdefault(d["target"], []).append(d)
            elif tag == "UNLOADED":
                d = kv(parts[1:])
                unloaded[d["target"]] = d
            elif tag == "TTFT" and len(parts) > 1:
                ttft[parts[1]] = kv(parts[2:])

    out = []
    w = out.append
    w("shade benchmark — %s" % meta.get("date", "?"))
    w("machine: %s" % meta.get("machine", "?").replace("_", " "))
    w("versions: %s" % meta.get("versions", "?").replace("_", " "))
    w("pinning: %s" % meta.get("pinning", "?").replace("_", " "))
    busy, after = meta.get("background_busy", "?"), meta.get("background_busy_after", "?")
    skewed = any(b.isdigit() and int(b) > 10 for b in (busy, after))
    w("CPU busy from other processes, 1 s before / after the run: %s%% / %s%%%s"
      % (busy, after, "  <-- WARNING: other load on the machine, results skewed" if skewed else ""))
    w("")

    # ---- throughput under load
    med = {}
    for t in TARGETS:
        runs = load.get(t, [])
        if not runs:
            continue
        med[t] = {k: statistics.median(r[k] for r in runs)
                  for k in ("rps", "p50_us", "p99_us", "sim_cpu_us", "proxy_cpu_us", "proxy_cpu_pct", "wrk_cpu_pct")}
        med[t]["other_max"] = max(r.get("other_cpu_pct", 0) for r in runs)
        med[t]["errors"] = sum(r["errors"] + r["status_errors"] for r in runs)
        med[t]["rounds"] = len(runs)
    if med:
        w("1. Throughput under load: POST /v1/chat/completions (%s B body, non-streaming,"
          " 16 tokens),\n   wrk 1 thread x %s connections, %s s per run after %s s warm-up,"
          " median of %s round(s)"
          % (meta.get("body_bytes", "?"), meta.get("connections", "?"), meta.get("duration", "?"),
             meta.get("warmup", "?"), meta.get("rounds", "?")))
        w("")
        w("   %-8s %10s %11s %11s %7s %13s %15s" % ("target", "req/s", "p50", "p99", "errors",
                                                  "sim CPU/req", "proxy CPU/req"))
        for t in TARGETS:
            if t in med:
                m = med[t]
                px = "-" if t == "direct" else "%.1f µs (%d%%)" % (m["proxy_cpu_us"], m["proxy_cpu_pct"])
                w("   %-8s %10.0f %11s %11s %7d %10.1f µs %15s" % (t, m["rps"], ms(m["p50_us"]), ms(m["p99_us"]),
                                                             m["errors"], m["sim_cpu_us"], px))
        w("   (CPU/req: CPU time of the process, all threads and children, per completed request;"
          "\n    the % is the share of one core the proxy used during the run)")
        other = max(m["other_max"] for m in med.values())
        w("   wrk used %s%% of a core; other processes used at most %d%% of a core during a run%s"
          % ("/".join("%d" % med[t]["wrk_cpu_pct"] for t in TARGETS if t in med), other,
             "  <-- WARNING: skewed" if other > 10 else ""))
        w("")
        if all(t in med for t in TARGETS):
            d, s, n = med["direct"], med["shade"], med["nginx"]
            r_sn = s["rps"] / n["rps"] if n["rps"] else float("nan")
            w("   shade / nginx  throughput: %.2fx   (target >= 0.80x: %s)" % (r_sn, verdict(r_sn >= 0.8)))
            w("   shade / direct throughput: %.2fx" % (s["rps"] / d["rps"]))
            w("   nginx / direct throughput: %.2fx" % (n["rps"] / d["rps"]))
            if s["proxy_cpu_us"] > 0:
                w("   proxy CPU per request, shade / nginx: %.2fx  (%.1f µs vs %.1f µs)"
                  % (s["proxy_cpu_us"] / n["proxy_cpu_us"], s["proxy_cpu_us"], n["proxy_cpu_us"]))
            add_s = s["p50_us"] - d["p50_us"]
            add_n = n["p50_us"] - d["p50_us"]
            line = "   added p50 under load: shade %s, nginx %s" % (fmt_us(add_s), fmt_us(add_n))
            if add_n > 0:
                line += " -> %.2fx nginx's (target <= 2x: %s)" % (add_s / add_n, verdict(add_s <= 2 * add_n))
            w(line)
        w("")

    # ---- unloaded latency
    if unloaded:
        w("2. Unloaded latency: wrk 1 thread x 1 connection, %s s, same request"
          % meta.get("unloaded_duration", "?"))
        w("")
        w("   %-8s %10s %10s %10s %10s %12s %8s" % ("target", "req/s", "p50 µs", "p99 µs", "mean µs", "added p50",
                                              "other"))
        d = unloaded.get("direct")
        for t in TARGETS:
            if t not in unloaded:
                continue
            u = unloaded[t]
            added = fmt_us(u["p50_us"] - d["p50_us"]) if d and t != "direct" else "-"
            w("   %-8s %10.0f %10.0f %10.0f %10.1f %12s %7d%%" % (t, u["rps"], u["p50_us"], u["p99_us"], u["mean_us"],
                                                             added, u.get("other_cpu_pct", 0)))
        if all(t in unloaded for t in TARGETS):
            add_s = unloaded["shade"]["p50_us"] - d["p50_us"]
            add_n = unloaded["nginx"]["p50_us"] - d["p50_us"]
            if add_n > 0:
                w("")
                w("   shade's added p50 = %.2fx nginx's (target <= 2x: %s)"
                  % (add_s / add_n, verdict(add_s <= 2 * add_n)))
        w("")

    # ---- streaming TTFT
    if ttft:
        w("3. Streaming time to first token: sim %s;\n   %s sequential streaming requests per path,"
          " interleaved, one keep-alive connection per path;\n   clock from writing the request"
          " to receiving the first SSE event with non-empty content"
          % (meta.get("ttft_sim", "?").replace("_", " "), meta.get("ttft_n", "?")))
        w("")
        w("   %-8s %12s %12s %14s %14s %7s" % ("target", "median", "p99", "added median", "added p99", "errors"))
        d = ttft.get("direct")
        for t in TARGETS:
            if t not in ttft:
                continue
            x = ttft[t]
            if not x.get("n"):
                w("   %-8s  no measurement (%d errors)" % (t, x.get("errors", 0)))
                continue
            am = fmt_us(x["median_us"] - d["median_us"]) if d and d.get("n") and t != "direct" else "-"
            ap = fmt_us(x["p99_us"] - d["p99_us"]) if d and d.get("n") and t != "direct" else "-"
            w("   %-8s %12s %12s %14s %14s %7d" % (t, ms(x["median_us"]), ms(x["p99_us"]), am, ap, x["errors"]))
        w("")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
