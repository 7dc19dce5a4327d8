#!/usr/bin/env python3
"""TTFT of a returning conversation with the prefix cache's tiers, and the fault runs.

Starts its own `slimkv serve` instances (and a redis-server) on loopback, one after another:
  recompute  a fresh instance without tiers gets the second turn cold
  ram        an instance without tiers gets the first turn, then the second (RAM prefix hit)
  disk       an instance with --kv-disk gets the first turn and is stopped (SIGTERM); a new
             one on the same directory gets the second turn (disk hit after a restart)
  redis      instance A (--kv-redis) gets the first turn; instance B gets the second
Fault runs (each compares every answer with the no-tier answers, greedy decoding):
  redis-killed   two instances sharing Redis serve --requests conversations in turns;
                 Redis is SIGKILLed halfway
  corrupt        the disk directory's block files are damaged (a byte flipped in half of
                 them, the rest truncated) between the first instance and the restarted one
  read-only      the restarted instance's --kv-disk directory is a read-only bind mount
                 (a private mount namespace: needs root or unprivileged user namespaces)
Usage: bench/kv_tiers_run.py [--tokens 4096] [--kv int4] [--requests 4] [--fault-tokens 1024] [--out FILE.md]
Prints a markdown table per part; --out also writes them to FILE.md.
"""
import argparse, http.client, json, os, shutil, signal, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Serve:
    def __init__(self, args, extra, wrap=None, name="serve", tokens=None):
        self.port = free_port()
        cmd = [args.slimkv, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--kv", args.kv,
               "-c", str((tokens or args.tokens) + 1024), "-t", str(args.threads), "--parallel", "2"] + extra
        if wrap:
            cmd = wrap(cmd)
        self.log = open(os.path.join(args.state, name + ".log"), "w")
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.p.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{name} did not start: {line!r}; see {self.log.name}")

    def ask(self, prompt, max_tokens):
        """(ttft seconds, text, cached tokens, error or None) of one streamed completion."""
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                           "stream_options": {"include_usage": True}})
        t0 = time.perf_counter()
        ttft, text, cached, err = None, "", -1, None
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                return None, "", -1, f"HTTP {r.status}: {r.read()[:200]!r}"
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if "error" in ev:
                    err = str(ev["error"])
                for ch in ev.get("choices", []):
                    if ch.get("text") and ttft is None:
                        ttft = time.perf_counter() - t0
                    text += ch.get("text", "")
                    if ch.get("finish_reason") not in (None, "stop", "length"):
                        err = "finish_reason " + ch["finish_reason"]
                if ev.get("usage"):
                    cached = ev["usage"]["prompt_tokens_details"]["cached_tokens"]
        except Exception as e:  # a failed request is counted, not raised
            err = repr(e)
        return ttft, text, cached, err

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait(timeout=120)
        self.log.close()


class Redis:
    def __init__(self, state):
        self.port = free_port()
        self.p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                   "--appendonly", "no", "--logfile", os.path.join(state, "redis.log")])
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def conversations(args, n, tokens=None):
    text = open(os.path.join(ROOT, "data/pg_essays.txt"), encoding="utf-8").read()
    chars = (tokens or args.tokens) * 4  # ~4 characters per token of English prose
    out = []
    for i in range(n):
        doc = text[i * 997: i * 997 + chars]
        first = doc + "\n\nQuestion: what is the main point of the text above?\nAnswer:"
        out.append((first, first + " It argues a point.\nQuestion: and what follows from it?\nAnswer:"))
    return out


def table(title, header, rows):
    s = f"\n{title}\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    for r in rows:
        s += "| " + " | ".join(str(x) for x in r) + " |\n"
    return s


def ro_wrap(d):
    def wrap(cmd):
        inner = f"mount --bind {d} {d} && mount -o remount,ro,bind {d} {d} && exec " + " ".join(cmd)
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", inner]
    return wrap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slimkv", default=os.path.join(ROOT, "build/bin/slimkv"))
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--kv", default="int4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new", type=int, default=8, help="tokens generated per request")
    ap.add_argument("--requests", type=int, default=4, help="conversations of the fault runs")
    ap.add_argument("--fault-tokens", type=int, default=1024, help="tokens of the fault runs' conversations")
    ap.add_argument("--out")
    ap.add_argument("--parts", default="ttft,faults")
    args = ap.parse_args()
    args.state = tempfile.mkdtemp(prefix="slimkv-tiers-")
    report = f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
    conv = conversations(args, max(args.requests, 1))
    first, second = conv[0]
    redis = None
    failed = 0
    try:
        if "ttft" in args.parts:
            rows, answers = [], {}
            s = Serve(args, [], name="recompute")
            ttft, answers["recompute"], cached, err = s.ask(second, args.new)
            rows.append(("recompute (fresh instance)", ttft, cached, err))
            s.stop()
            s = Serve(args, [], name="ram")
            s.ask(first, args.new)
            ttft, answers["ram"], cached, err = s.ask(second, args.new)
            rows.append(("RAM prefix hit", ttft, cached, err))
            s.stop()
            disk = os.path.join(args.state, "disk")
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], name="disk1")
            s.ask(first, args.new)
            s.stop()
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], name="disk2")
            ttft, answers["disk"], cached, err = s.ask(second, args.new)
            rows.append(("disk hit after a restart", ttft, cached, err))
            s.stop()
            redis = Redis(args.state)
            addr = f"127.0.0.1:{redis.port}"
            a = Serve(args, ["--kv-redis", addr], name="redisA")
            a.ask(first, args.new)
            b = Serve(args, ["--kv-redis", addr], name="redisB")
            ttft, answers["redis"], cached, err = b.ask(second, args.new)
            rows.append(("Redis hit from a second instance", ttft, cached, err))
            a.stop()
            b.stop()
            redis.kill()
            base = rows[0][1]
            # Every hit attaches the same blocks: equal answers (recompute may differ in the last bits).
            same = all(answers[k] == answers["ram"] for k in ("disk", "redis"))
            report += table(f"TTFT of a returning conversation ({args.kv} KV, second turn of "
                            f"{args.tokens} + ~20 tokens, {args.new} generated; disk and Redis answers equal to the RAM hit's: {same}; recompute's equal too: {answers['recompute'] == answers['ram']})",
                            ["path", "TTFT s", "speed-up vs recompute", "cached tokens", "error"],
                            [(r[0], f"{r[1]:.3f}" if r[1] else "-", f"{base / r[1]:.1f}x" if r[1] else "-", r[2], r[3] or "")
                             for r in rows])
            failed += sum(1 for r in rows if r[3]) + (0 if same else 1)
        if "faults" in args.parts:
            rows = []
            # The answers without tiers to compare with: each second turn cold, and after its
            # first turn (a RAM prefix hit, the blocks a tier returns; a cold prefill differs
            # from it in the last bits, as its tokens attend to each other before quantization).
            conv = conversations(args, max(args.requests, 1), args.fault_tokens)
            s = Serve(args, [], name="plain", tokens=args.fault_tokens)
            cold = [s.ask(c[1], args.new)[1] for c in conv]
            s.stop()
            s = Serve(args, [], name="plain-hit", tokens=args.fault_tokens)
            hit = []
            for c in conv:
                s.ask(c[0], args.new)
                hit.append(s.ask(c[1], args.new)[1])
            s.stop()

            def wrong_answer(i, text, cached):
                return text != (hit[i] if cached > 0 else cold[i])
            # Redis killed mid-run: two instances, conversations alternating between them.
            redis = Redis(args.state)
            addr = f"127.0.0.1:{redis.port}"
            inst = [Serve(args, ["--kv-redis", addr], name=f"fault{i}", tokens=args.fault_tokens) for i in range(2)]
            errs = wrong = hits = 0
            for i, c in enumerate(conv):
                if i == len(conv) // 2:
                    redis.kill()
                inst[i % 2].ask(c[0], args.new)
                time.sleep(0.5)  # blocks reach Redis from a writer thread, a few ms after the answer
                _, text, cached, err = inst[(i + 1) % 2].ask(c[1], args.new)
                errs += err is not None
                wrong += wrong_answer(i, text, cached)
                hits += cached > 0
            for x in inst:
                x.stop()
            rows.append((f"Redis SIGKILLed after {len(conv) // 2} of {len(conv)} conversations", 2 * len(conv), errs,
                         wrong, f"{hits} of {len(conv)} second turns"))
            # A corrupted disk tier.
            disk = os.path.join(args.state, "disk-corrupt")
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], name="corrupt1", tokens=args.fault_tokens)
            s.ask(conv[0][0], args.new)
            s.stop()
            files = sorted(f for f in os.listdir(disk) if f.endswith(".kvb"))
            for j, f in enumerate(files):
                p = os.path.join(disk, f)
                n = os.path.getsize(p)
                with open(p, "r+b") as fh:
                    if j % 2 == 0:
                        fh.seek(n // 2)
                        b = fh.read(1)
                        fh.seek(n // 2)
                        fh.write(bytes([b[0] ^ 0x10]))
                    else:
                        fh.truncate(n - 7)
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], name="corrupt2", tokens=args.fault_tokens)
            _, text, cached, err = s.ask(conv[0][1], args.new)
            s.stop()
            rows.append((f"{len(files)} block files damaged (flipped byte / truncated)", 1, int(err is not None),
                         int(wrong_answer(0, text, cached)), f"{cached} cached tokens"))
            # A read-only disk directory (the restarted instance's).
            disk = os.path.join(args.state, "disk-ro")
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], name="ro1", tokens=args.fault_tokens)
            s.ask(conv[0][0], args.new)
            s.stop()
            s = Serve(args, ["--kv-disk", disk, "--kv-disk-mem", "2"], wrap=ro_wrap(disk), name="ro2", tokens=args.fault_tokens)
            errs = wrong = 0
            cached_ro = []
            for i, c in enumerate(conv[:2]):
                _, text, cached, err = s.ask(c[1], args.new)
                errs += err is not None
                wrong += wrong_answer(i, text, cached)
                cached_ro.append(cached)
            s.stop()
            rows.append(("--kv-disk directory read-only after a restart", 2, errs, wrong,
                         f"cached tokens {cached_ro} (reads go on, writes stop)"))
            failed += sum(r[2] + r[3] for r in rows)
            report += table(f"Fault runs ({args.kv} KV, {args.fault_tokens}-token conversations; each answer compared "
                            "with an instance without tiers: a RAM prefix hit's answer where it reused blocks, a cold "
                            "prefill's where it did not)", ["fault", "requests", "failed", "wrong outputs", "reuse"],
                            rows)
    finally:
        if redis:
            redis.kill()
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)
    shutil.rmtree(args.state, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
