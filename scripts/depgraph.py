#!/usr/bin/env python3
"""scripts/depgraph.py [--list] [--summary FILE] — the module graph of src/.

A module is a .c with its .h (same basename; a header alone is a module too).
Module A depends on module B when any file of A has `#include "B.h"`.  The
graph must be a DAG (doc/architecture.md): a cycle means neither side can be
understood, tested or replaced without the other, so this exits 1 and prints
each cycle it finds.  `make check` runs it.

--list   print every module's folder and dependencies, lowest layer first
--summary FILE   append the one-line summary to FILE (make check's summary)
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def scan():
    """Return {module: folder} and {module: set of modules it includes}."""
    files = []
    for d, _, names in os.walk(ROOT):
        files += [os.path.join(d, n) for n in names if n.endswith((".c", ".h"))]
    folder = {}
    for f in files:
        mod = os.path.splitext(os.path.basename(f))[0]
        folder[mod] = os.path.relpath(os.path.dirname(f), ROOT)
    deps = {m: set() for m in folder}
    for f in files:
        mod = os.path.splitext(os.path.basename(f))[0]
        with open(f, encoding="utf-8") as fh:
            for inc in INCLUDE.findall(fh.read()):
                other = os.path.splitext(os.path.basename(inc))[0]
                if inc.endswith(".h") and other in folder and other != mod:
                    deps[mod].add(other)
    return folder, deps


def cycles(deps):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def cycle_path(deps, comp):
    """One concrete cycle inside a component, as a list of modules."""
    members = set(comp)
    start = comp[0]
    prev, todo = {start: None}, [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(deps[v] & members):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return comp


def layers(deps):
    """Longest-path layer of each module (0 = depends on nothing)."""
    layer = {}

    def depth(v):
        if v not in layer:
            layer[v] = 0
            layer[v] = 1 + max((depth(w) for w in deps[v]), default=-1)
        return layer[v]

    for v in deps:
        depth(v)
    return layer


def main(argv):
    folder, deps = scan()
    found = cycles(deps)
    nedges = sum(len(d) for d in deps.values())
    if found:
        for comp in found:
            print(f"depgraph: cycle among {{{', '.join(comp)}}}, e.g. " + " -> ".join(cycle_path(deps, comp)),
                  file=sys.stderr)
        print(f"depgraph: {len(found)} cycle(s) between modules of src/ (a module = a .c and its .h)",
              file=sys.stderr)
        return 1
    if "--list" in argv:
        lay = layers(deps)
        for m in sorted(deps, key=lambda m: (lay[m], folder[m], m)):
            print(f"{lay[m]:2d}  {folder[m] + '/' + m:24s} -> {' '.join(sorted(deps[m])) or '-'}")
    line = f"depgraph: {len(deps)} modules, {nedges} dependencies, no cycles"
    print(line)
    if "--summary" in argv:
        with open(argv[argv.index("--summary") + 1], "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
