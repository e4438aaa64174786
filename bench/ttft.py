#!/usr/bin/env python3
"""ttft.py — time to first token through several paths, measured the same way.

usage: ttft.py [-n N] [--timeout SEC] BODY_FILE NAME=HOST:PORT [NAME=HOST:PORT ...]

For each path, one keep-alive HTTP/1.1 connection.  The requests are
interleaved (path 1, path 2, ..., path 1, ...) and strictly sequential, so
every path sees the same machine state and nothing overlaps.  For each
request the clock starts just before the request is written and stops when
the first SSE event whose choices[0].delta.content (or choices[0].text) is
non-empty has been received; the rest of the stream is then read to the end
so the connection can be reused.  The response framing may be chunked,
Content-Length or close-delimited: each proxy is free to choose.

Output: one line per path,
    TTFT name n=N errors=E median_us=.. p90_us=.. p99_us=.. min_us=.. max_us=..
and exit status 0 if every path got at least one measurement.
"""
import json
import math
import socket
import sys
import time


class Conn:
    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = None
        self.buf = b""

    def open(self):
        self.close()
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out, self.buf = self.buf[:i], self.buf[i + 2:]
                return out
            self.fill()

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def body_pieces(c, headers):
    """Yield the response body in pieces as they arrive."""
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        while True:
            size = int(c.line().split(b";")[0].strip(), 16)
            if size == 0:
                while c.line():  # trailers, then the empty line
                    pass
                return
            # hand over what is here now, so the first token is seen as it lands
            left = size
            while left:
                if not c.buf:
                    c.fill()
                piece = c.buf[:left]
                c.buf = c.buf[len(piece):]
                left -= len(piece)
                yield piece
            c.exactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            if not c.buf:
                c.fill()
            piece = c.buf[:left]
            c.buf = c.buf[len(piece):]
            left -= len(piece)
            yield piece
    else:  # close-delimited
        while True:
            if c.buf:
                piece, c.buf = c.buf, b""
                yield piece
            try:
                c.fill()
            except EOFError:
                c.keep = False
                return


def has_content(event):
    for ln in event.split(b"\n"):
        if not ln.startswith(b"data:"):
            continue
        data = ln[5:].strip()
        if data == b"[DONE]" or not data:
            continue
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        for ch in obj.get("choices") or []:
            delta = ch.get("delta") or {}
            if delta.get("content") or ch.get("text"):
                return True
    return False


def one(c, req):
    """One streaming request; returns TTFT in ns (raises on any failure)."""
    if c.sock is None:
        c.open()
    c.keep = True
    t0 = time.perf_counter_ns()
    c.sock.sendall(req)
    status = c.line()
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("bad status line %r" % status)
    code = int(parts[1])
    headers = {}
    while True:
        ln = c.line()
        if not ln:
            break
        k, _, v = ln.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    if "close" in headers.get("connection", "").lower():
        c.keep = False
    ttft = None
    pending = b""
    for piece in body_pieces(c, headers):
        if ttft is None:
            pending += piece.replace(b"\r\n", b"\n")
            while ttft is None:
                i = pending.find(b"\n\n")
                if i < 0:
                    break
                event, pending = pending[:i], pending[i + 2:]
                if has_content(event):
                    ttft = time.perf_counter_ns() - t0
    if not c.keep:
        c.close()
    if code != 200:
        raise ValueError("HTTP %d" % code)
    if ttft is None:
        raise ValueError("no content event in the stream")
    return ttft


def pct(sorted_vals, p):
    """Nearest-rank percentile."""
    if not sorted_vals:
        return 0
    k = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100.0 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def main(argv):
    n, timeout, warm = 200, 10.0, 10
    args = argv[1:]
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        if opt == "-n":
            n = int(args.pop(0))
        elif opt == "--timeout":
            timeout = float(args.pop(0))
        elif opt == "--warmup":
            warm = int(args.pop(0))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], "rb") as f:
        body = f.read()
    paths = []
    for spec in args[1:]:
        name, _, hp = spec.partition("=")
        host, _, port = hp.rpartition(":")
        req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\n"
               b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
               b"Content-Length: %d\r\n\r\n" % (hp.encode(), len(body))) + body
        paths.append({"name": name, "conn": Conn(host, int(port), timeout), "req": req,
                      "ttft": [], "errors": 0, "last_error": ""})
    for i in range(warm + n):
        for p in paths:
            try:
                t = one(p["conn"], p["req"])
                if i >= warm:
                    p["ttft"].append(t)
            except (OSError, EOFError, ValueError) as e:
                p["conn"].close()
                if i >= warm:
                    p["errors"] += 1
                p["last_error"] = str(e)
    ok = True
    for p in paths:
        v = sorted(x / 1000.0 for x in p["ttft"])
        if not v:
            ok = False
            print("TTFT %s n=0 errors=%d last_error=%s" % (p["name"], p["errors"], p["last_error"]))
            continue
        print("TTFT %s n=%d errors=%d median_us=%.0f p90_us=%.0f p99_us=%.0f min_us=%.0f max_us=%.0f"
              % (p["name"], len(v), p["errors"], pct(v, 50), pct(v, 90), pct(v, 99), v[0], v[-1]))
        if p["errors"]:
            print("TTFT-ERROR %s %s" % (p["name"], p["last_error"]), file=sys.stderr)
        p["conn"].close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
