"""Starting and stopping `slimkv serve` for the end-to-end tests, and small HTTP helpers.

The server is the real binary (SLIMKV_BIN) on a free loopback port (--port 0; it prints the
port it got). Every helper talks to 127.0.0.1 only.
"""
import json
import os
import re
import signal
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

    def __init__(self, *args, startup_timeout=120):
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.proc = None
        self.port = None
        self.stderr_path = None

    def __enter__(self):
        if not os.path.exists(MODEL):
            raise SystemExit(f"FAIL: model {MODEL} not found (run make models)")
        self.stderr_path = f"/tmp/slimkv_serve_{os.getpid()}_{id(self)}.err"
        self.stderr = open(self.stderr_path, "w+")
        cmd = [BIN, "serve", "-m", MODEL, "--host", "127.0.0.1", "--port", "0"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
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
