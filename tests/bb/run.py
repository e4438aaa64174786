#!/usr/bin/env python3
"""Run the black-box tests: every test_* function in tests/bb/test_*.py, each
with a fresh Env (its own processes and ports) and a time limit.

usage: run.py [-k SUBSTRING] [-j JOBS]"""
import argparse
import concurrent.futures
import importlib.util
import os
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

TEST_TIMEOUT = 60 * harness.SLOW


def collect(k):
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fn[:-3], os.path.join(HERE, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(vars(mod)):
            if name.startswith("test_") and callable(getattr(mod, name)):
                full = f"{fn[:-3]}.{name}"
                if not k or k in full:
                    tests.append((full, getattr(mod, name)))
    return tests


def run_one(full, fn):
    env = harness.Env()
    t0 = time.time()
    err = None
    result = {}

    def body():
        try:
            fn(env)
        except BaseException:  # noqa: BLE001 — report everything
            result["err"] = traceback.format_exc()

    th = threading.Thread(target=body, daemon=True)
    th.start()
    th.join(TEST_TIMEOUT)
    if th.is_alive():
        err = f"timed out after {TEST_TIMEOUT:.0f}s"
    else:
        err = result.get("err")
    try:
        env.close()
    except AssertionError as e:
        err = (err or "") + f"\n{e}"
    return full, err, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("-j", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(harness.BIN):
        print(f"missing {harness.BIN}: build first")
        return 2
    tests = collect(a.k)
    failed = []
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.j) as ex:
        for full, err, dt in ex.map(lambda t: run_one(*t), tests):
            if err:
                failed.append(full)
                print(f"FAIL {full} ({dt:.1f}s)\n{err}", flush=True)
            else:
                print(f"ok   {full} ({dt:.1f}s)", flush=True)
    line = (f"black-box ({os.path.basename(harness.BIN)}): {len(tests) - len(failed)} passed, "
            f"{len(failed)} failed, {time.time() - t0:.1f}s")
    print("\n" + line)
    if os.environ.get("SHADE_SUMMARY"):
        with open(os.environ["SHADE_SUMMARY"], "a") as f:
            f.write(line + "\n")
    for f in failed:
        print(f"  failed: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
