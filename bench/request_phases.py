#!/usr/bin/env python3
"""Where one user's request spends its time (docs/BENCHMARKS.md, "One request, phase by phase").

Starts `slimkv serve -v` (tests/server/serve_util.py's Server) and sends streamed completions one
after another from one client (Python's http.client, nothing else running). Per request, the
client's time to its first non-empty text against the scheduler's time to first token (the
difference of /metrics around the request): what is left is HTTP, JSON, tokenization and the
client. Over all requests, the scheduler's phases (vLLM's histograms: queue, prefill, decode)
and the access log's time per exchange.

Usage: bench/request_phases.py [--kv fp16] [--requests 12] [--words 50] [--tokens 64] [--model GGUF]
"""
import argparse, http.client, json, os, random, re, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "server"))
from serve_util import Server, metrics  # noqa: E402

VOCAB = ("apple river stone garden music window silver paper quiet engine forest letter morning "
         "island copper winter bridge candle market shadow").split()


def vllm(m, name, kind):
    """vllm:NAME[_seconds]_KIND summed over its labels (one model: one series)."""
    keys = (f"vllm:{name}_seconds_{kind}", f"vllm:{name}_{kind}")
    return sum(v for k, v in m.items() if k.split("{", 1)[0] in keys)


def request(port, seed, words, tokens):
    rnd = random.Random(seed)
    body = json.dumps({"prompt": " ".join(rnd.choice(VOCAB) for _ in range(words)), "max_tokens": tokens,
                       "temperature": 0, "stream": True})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    first = None
    for line in c.getresponse():
        if line.startswith(b"data: [DONE]"):
            break
        if first is None and line.startswith(b"data: {") and json.loads(line[6:])["choices"][0].get("text"):
            first = time.perf_counter() - t0
    c.close()
    return first, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kv", default="fp16")
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--words", type=int, default=50, help="prompt words")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens")
    ap.add_argument("--model", help="GGUF file (default: serve_util's, SmolLM2-135M)")
    a = ap.parse_args()
    with Server("--kv", a.kv, "-v", model=a.model) as srv:
        print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.path.basename(srv.model)}, "
              f"--kv {a.kv}, load {' '.join(open('/proc/loadavg').read().split()[:3])}", file=sys.stderr)
        for i in range(3):  # warm-up
            request(srv.port, 10_000 + i, a.words, a.tokens)
        start = metrics(srv.url)
        gaps, firsts, totals = [], [], []
        for i in range(a.requests):
            before = metrics(srv.url)
            first, total = request(srv.port, i, a.words, a.tokens)
            after = metrics(srv.url)
            sched = vllm(after, "time_to_first_token", "sum") - vllm(before, "time_to_first_token", "sum")
            gaps.append(1000 * (first - sched))
            firsts.append(1000 * first)
            totals.append(1000 * total)
        end = metrics(srv.url)
        log = srv.log()

    def diff(name, kind):
        return vllm(end, name, kind) - vllm(start, name, kind)

    count = diff("e2e_request_latency", "count")
    print(f"{count:.0f} requests, {diff('prompt_tokens', 'total') / count:.1f} prompt tokens and "
          f"{diff('generation_tokens', 'total') / count:.1f} generated tokens each")
    print("| phase (scheduler) | mean ms |")
    print("|---|---:|")
    for name, label in [("request_queue_time", "queue"), ("request_prefill_time", "prefill"),
                        ("time_to_first_token", "time to first token"), ("request_decode_time", "decode"),
                        ("inter_token_latency", "between tokens"), ("e2e_request_latency", "request")]:
        print(f"| {label} | {1000 * diff(name, 'sum') / max(diff(name, 'count'), 1):.2f} |")
    logged = [float(x) for x in re.findall(r'"POST /v1/completions" \d+ \d+ ([0-9.]+)ms', log)][-a.requests:]
    print(f"access log, the exchange as the server sees it: mean {statistics.mean(logged):.2f} ms "
          f"(the scheduler's request: {1000 * diff('e2e_request_latency', 'sum') / count:.2f})")
    print(f"client: time to first text p50 {statistics.median(firsts):.1f} ms, "
          f"request p50 {statistics.median(totals):.1f} ms")
    gaps.sort()
    print(f"client's time to first text minus the scheduler's time to first token, per request: "
          f"median {statistics.median(gaps):.1f} ms, range {gaps[0]:.1f} to {gaps[-1]:.1f} ms")


if __name__ == "__main__":
    main()
