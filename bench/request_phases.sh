#!/usr/bin/env bash
# Where one user's request spends its time (docs/BENCHMARKS.md, "One request, phase by phase"):
# `slimkv serve -v` and one client (Python's http.client, nothing else running) sending streamed
# completions one after another. Per request, the client's time to its first non-empty text
# against the scheduler's time to first token (the difference of /metrics around the request):
# what is left is HTTP, JSON, tokenization and the client. Over all requests, the scheduler's
# phases (vLLM's histograms: queue, prefill, decode) and the access log's time per exchange.
#
#   bench/request_phases.sh
#
# Environment: BUILD (build), MODEL (smollm2-135m), KV (fp16), N (12 requests), WORDS (50, prompt
# words), TOKENS (64, max_tokens), PORT (8391).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
MODEL=${MODEL:-smollm2-135m}
KV=${KV:-fp16}
PORT=${PORT:-8391}
work=$(mktemp -d)
"$BIN/slimkv" serve -m "$MODEL" --kv "$KV" --port "$PORT" -v 2> "$work/serve.log" > /dev/null &
server=$!
trap 'kill $server 2> /dev/null; wait $server 2> /dev/null; rm -rf "$work"' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/health" > /dev/null || { echo "the server did not start: $(tail -3 "$work/serve.log")" >&2; exit 1; }
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $MODEL, --kv $KV, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
PORT=$PORT N=${N:-12} WORDS=${WORDS:-50} TOKENS=${TOKENS:-64} python3 - "$work/serve.log" <<'PY'
import http.client, json, os, random, re, statistics, sys, time

port, n, words, tokens = (int(os.environ[k]) for k in ("PORT", "N", "WORDS", "TOKENS"))
vocab = ("apple river stone garden music window silver paper quiet engine forest letter morning "
         "island copper winter bridge candle market shadow").split()

def metrics():
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    out = {}
    for m in re.finditer(r"^vllm:([a-z0-9_]+?)(?:_seconds)?_(sum|count|total)\{[^}]*\} (\S+)$", text, re.M):
        out[(m[1], m[2])] = float(m[3])
    return out

def request(seed):
    rnd = random.Random(seed)
    body = json.dumps({"prompt": " ".join(rnd.choice(vocab) for _ in range(words)), "max_tokens": tokens,
                       "temperature": 0, "stream": True})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    first = None
    for line in r:
        if line.startswith(b"data: [DONE]"):
            break
        if first is None and line.startswith(b"data: {"):
            if json.loads(line[6:])["choices"][0].get("text"):
                first = time.perf_counter() - t0
    c.close()
    return first, time.perf_counter() - t0

for i in range(3):  # warm-up
    request(10_000 + i)
start = metrics()
pairs = []
for i in range(n):
    before = metrics()
    first, total = request(i)
    after = metrics()
    sched = after[("time_to_first_token", "sum")] - before[("time_to_first_token", "sum")]
    pairs.append((1000 * first, 1000 * sched, 1000 * total))
end = metrics()

def diff(name, kind):
    return end.get((name, kind), 0.0) - start.get((name, kind), 0.0)

count = diff("e2e_request_latency", "count")
print(f"{count:.0f} requests, {diff('prompt_tokens', 'total') / count:.1f} prompt tokens and "
      f"{diff('generation_tokens', 'total') / count:.1f} generated tokens each")
print("| phase (scheduler) | mean ms |")
print("|---|---:|")
for name, label in [("request_queue_time", "queue"), ("request_prefill_time", "prefill"),
                    ("time_to_first_token", "time to first token"), ("request_decode_time", "decode"),
                    ("inter_token_latency", "between tokens"), ("e2e_request_latency", "request")]:
    print(f"| {label} | {1000 * diff(name, 'sum') / max(diff(name, 'count'), 1):.2f} |")
logged = [float(x) for x in re.findall(r'"POST /v1/completions" \d+ \d+ ([0-9.]+)ms', open(sys.argv[1]).read())][-n:]
print(f"access log, the exchange as the server sees it: mean {statistics.mean(logged):.2f} ms "
      f"(the scheduler's request: {1000 * diff('e2e_request_latency', 'sum') / count:.2f})")
print(f"client: time to first text p50 {statistics.median(p[0] for p in pairs):.1f} ms, "
      f"request p50 {statistics.median(p[2] for p in pairs):.1f} ms")
gaps = sorted(p[0] - p[1] for p in pairs)
print(f"client's time to first text minus the scheduler's time to first token, per request: "
      f"median {statistics.median(gaps):.1f} ms, range {gaps[0]:.1f} to {gaps[-1]:.1f} ms")
PY
