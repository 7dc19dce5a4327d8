"""Starting and stopping `slimkv serve` for the end-to-end tests, and small HTTP helpers.

The server is the real binary (SLIMKV_BIN) on a free loopback port (--port 0; it prints the
port it got). Every helper talks to 127.0.0.1 only.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

SRC = os.environ.get("SLIMKV_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BIN = os.environ.get("SLIMKV_BIN") or os.path.join(SRC, "build/bin/slimkv")
MODEL_DIR = os.environ.get("SLIMKV_MODEL_DIR") or os.path.join(SRC, "models")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")


class Server:
    """`slimkv serve ARGS` on 127.0.0.1 and a free port; a context manager."""

    def __init__(self, *args, startup_timeout=120, env=None, model=None):
        self.args = list(args)
        self.env = env
        self.model = model or MODEL
        self.startup_timeout = startup_timeout
        self.proc = None
        self.port = None
        self.stderr_path = None

    def __enter__(self):
        if not os.path.exists(self.model):
            raise SystemExit(f"FAIL: model {self.model} not found (run make models)")
        self.stderr_path = f"/tmp/slimkv_serve_{os.getpid()}_{id(self)}.err"
        self.stderr = open(self.stderr_path, "w+")
        cmd = [BIN, "serve", "-m", self.model, "--host", "127.0.0.1", "--port", "0"] + self.args
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        deadline = time.time() + self.startup_timeout
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(m.group(1))
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        self.stderr.flush()
        with open(self.stderr_path) as f:
            return f.read()

    def terminate(self, timeout=120):
        """SIGTERM, then the exit code (the server drains first)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        os.unlink(self.stderr_path)
        return False


def request(url, method="GET", body=None, headers=None, timeout=120):
    """(status, headers, body bytes) of one HTTP request; errors are answers, not exceptions."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in req.headers:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


_PENDING = {}  # id(socket) -> bytes read past the last response


def read_response(sock, timeout=10):
    """(status, headers dict with lower-case names, body bytes) of one HTTP/1.1 response read
    from `sock`; None when the connection closes before a status line. Handles Content-Length
    and chunked bodies; bytes read past the response are kept for the next call."""
    sock.settimeout(timeout)
    buf = _PENDING.pop(id(sock), b"")
    deadline = time.time() + timeout

    def more():
        nonlocal buf
        if time.time() > deadline:
            raise TimeoutError("no complete response in time")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise EOFError
        buf += data

    try:
        while b"\r\n\r\n" not in buf:
            more()
    except EOFError:
        return None
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            while b"\r\n" not in buf:
                more()
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                more()
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    elif status not in (204, 304) and "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            more()
        body, buf = buf[:n], buf[n:]
    _PENDING[id(sock)] = buf
    return status, headers, body


def raw_connect(port, source="127.0.0.1", timeout=10):
    """A socket to 127.0.0.1:port from the loopback address `source` (127.0.0.2, ... let a test be a
    second client address)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _PENDING.pop(id(s), None)  # left by an earlier socket object at the same address
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def raw_request(port, data, timeout=10, source="127.0.0.1"):
    """Sends `data` (bytes) on a new connection and reads one response (see read_response)."""
    s = raw_connect(port, source, timeout)
    try:
        s.sendall(data)
        return read_response(s, timeout)
    finally:
        s.close()


def post_bytes(path, body, extra=b"", host=b"127.0.0.1", content_type=b"application/json"):
    """The bytes of a POST with a Content-Length."""
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: " + content_type +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def rss_bytes(pid):
    """Resident memory of process `pid` (VmRSS) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def metrics(url):
    """/metrics as {name{labels}: value}."""
    status, _, body = request(url + "/metrics")
    assert status == 200, status
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def assert_cancelled(url, before, timeout, fewer_than):
    """Waits until one more request than in `before` (metrics) was cancelled; then none runs and
    fewer than `fewer_than` tokens were generated since `before`."""
    wait_for(lambda: metrics(url)['slimkv_requests_total{outcome="cancelled"}'] >
             before['slimkv_requests_total{outcome="cancelled"}'], timeout, "the request to be cancelled")
    m = metrics(url)
    assert m["slimkv_requests_running"] == 0
    assert m["slimkv_generation_tokens_total"] - before["slimkv_generation_tokens_total"] < fewer_than


def wait_for(predicate, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Checks:
    """Counts named checks and prints 'N passed, N failed' at the end (ctest reads the exit code)."""

    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.start = time.time()

    def run(self, name, fn):
        t0 = time.time()
        try:
            fn()
            self.passed += 1
            print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed ({time.time() - self.start:.0f} s)")
        sys.exit(1 if self.failed else 0)
