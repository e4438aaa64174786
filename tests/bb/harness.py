"""Black-box test harness: starts the real bin/shade (serve and sim) on
127.0.0.1, talks to it over sockets, and stops every process it started by
PID.  Standard library only."""
import http.client
import re
import threading
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, os.environ.get("SHADE_BIN", "bin/shade"))
SANITIZED = "asan" in os.path.basename(BIN)
SLOW = 4.0 if SANITIZED else 1.0   # sanitizer builds are slower: widen waits


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Proc:
    def __init__(self, args, name, env=None, preexec=None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"shade-{name}-", suffix=".log", delete=False)
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=66")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=67")
        if env:
            e.update(env)
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=e, preexec_fn=preexec)
        self.pid = self.p.pid

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop by PID; returns the exit code (or -9 when it had to be killed)."""
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout=timeout * SLOW)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
                return -9
        return self.p.returncode

    def cpu_seconds(self):
        """CPU time of the process and of its children still running (the
        gateway's master and its serving process)."""
        total = 0.0
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return total

    def children(self):
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    def sanitizer_report(self):
        out = self.output()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in out:
                return out
        return None


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if proc.p.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.p.returncode}:\n{proc.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"{proc.name} did not listen on {port}:\n{proc.output()}")


def wait_serving(port, proc, timeout=10):
    """The master listens before its serving process runs: wait for an answer."""
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        if proc.p.poll() is not None:
            raise AssertionError(f"{proc.name} exited with {proc.p.returncode}:\n{proc.output()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{proc.name} did not serve on {port}:\n{proc.output()}")


class Env:
    """One test's processes.  Everything started here is stopped in close()."""

    def __init__(self):
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="shade-bb-")
        self.expect_exit = {}

    def sim(self, *args, port=None):
        port = port or free_port()
        p = Proc([BIN, "sim", "--listen", f"127.0.0.1:{port}", *map(str, args)], f"sim{port}")
        self.procs.append(p)
        wait_port(port, p)
        return port

    def gateway(self, yaml_text, port=None, wait=True, preexec=None, env=None):
        port = port or free_port()
        path = os.path.join(self.tmp, f"gw{port}.yaml")
        with open(path, "w") as f:
            f.write(yaml_text.replace("{PORT}", str(port)))
        p = Proc([BIN, "serve", "-c", path], f"gw{port}", preexec=preexec, env=env)
        self.procs.append(p)
        if wait:
            wait_port(port, p)
            wait_serving(port, p)
        self.last_gateway = p
        return port

    def close(self):
        problems = []
        for p in reversed(self.procs):
            rc = p.stop()
            rep = p.sanitizer_report()
            if rep:
                problems.append(f"{p.name}: sanitizer report:\n{rep[-4000:]}")
            elif rc not in (0, self.expect_exit.get(p.pid, 0)):
                problems.append(f"{p.name}: exit code {rc}:\n{p.output()[-2000:]}")
        if problems:
            raise AssertionError("\n".join(problems))


def basic_config(*backends, model="demo", extra_model="", server_extra="", backend_extra=""):
    lines = ["server:", "  listen: 127.0.0.1:{PORT}", "  workers: 2", "  log_level: warn"]
    lines += ["  " + l for l in server_extra.strip().splitlines()] if server_extra.strip() else []
    lines += ["models:", f"  - name: {model}", "    backends:"]
    for i, b in enumerate(backends):
        lines.append(f"      - url: http://127.0.0.1:{b}")
        lines.append(f"        name: b{i}")
        for l in backend_extra.strip().splitlines():
            lines.append("        " + l)
    return "\n".join(lines) + "\n" + extra_model


# ---------- clients ----------

def request(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def post(port, body, path="/v1/chat/completions", **kw):
    return request(port, "POST", path, body, **kw)


def raw(port, data, timeout=1.0, until_close=False):
    """Send raw bytes; read until the peer closes or `timeout` of silence."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(timeout * SLOW)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except socket.timeout:
        if until_close:
            raise
    finally:
        s.close()
    return out


def parse_responses(data):
    """Split a byte stream into HTTP/1.1 responses: [(status, headers, body)]."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if status == 100:
            data = rest
            continue
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            body, data = rest[:n], rest[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                line, _, rest = rest.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:size]
                rest = rest[size + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append((status, hdrs, body))
    return out


def sse_events(body):
    """data: payloads of an SSE body, in order."""
    evs = []
    for block in body.decode().split("\n\n"):
        data = [l[5:].lstrip(" ") if l.startswith("data:") else None for l in block.split("\n")]
        data = [d for d in data if d is not None]
        if data:
            evs.append("\n".join(data))
    return evs


def stream_text(body):
    text = ""
    for e in sse_events(body):
        if e == "[DONE]":
            continue
        j = json.loads(e)
        for ch in j.get("choices", []):
            d = ch.get("delta") or {}
            text += d.get("content") or ch.get("text") or ""
    return text


def metrics(port):
    st, _, body = request(port, "GET", "/metrics")
    assert st == 200, st
    vals = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, v = line.rpartition(" ")
        vals[name] = float(v)
    return vals


def chat(content="Hello there", **kw):
    b = {"model": "demo", "messages": [{"role": "user", "content": content}]}
    b.update(kw)
    return b


# ---------- fake upstreams ----------

class FakeUpstream:
    """A raw HTTP/1.1 upstream on 127.0.0.1 (TLS when given an SSLContext).
    `respond(request_bytes)` returns the pieces to send back, written with a
    short pause between them so they arrive as separate reads."""

    def __init__(self, respond, close_after=False, ssl_ctx=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.respond = respond
        self.close_after = close_after
        self.ssl_ctx = ssl_ctx
        self.requests = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, c):
        if self.ssl_ctx:
            try:
                c = self.ssl_ctx.wrap_socket(c, server_side=True)
            except OSError:
                c.close()
                return
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, rest = buf.partition(b"\r\n\r\n")
                n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(rest) < n:
                    rest += c.recv(65536)
                req = head + b"\r\n\r\n" + rest[:n]
                self.requests.append(req)
                buf = rest[n:]
                for piece in self.respond(req):
                    c.sendall(piece)
                    threading.Event().wait(0.01)
                if self.close_after:
                    return


def canned(pieces, **kw):
    """A FakeUpstream answering every request with the same pieces."""
    return FakeUpstream(lambda req: pieces, **kw)


def json_response(obj, status="200 OK"):
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return [b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), len(body), body)]


def open_request(port, body, path="/v1/chat/completions", extra=b""):
    """Send one POST on a fresh raw socket and return the socket."""
    s = socket.create_connection(("127.0.0.1", port))
    b = json.dumps(body).encode() if not isinstance(body, bytes) else body
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s"
              % (path.encode(), len(b), extra, b))
    return s


def read_all(s, timeout=10):
    s.settimeout(timeout * SLOW)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        out += d
    s.close()
    return out
