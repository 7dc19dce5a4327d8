#!/usr/bin/env bash
# The hardening figures of docs/BENCHMARKS.md ("A server you can expose") in one run, loopback
# only, bounded in time: idle RSS of `slimkv serve` with default flags, then RSS and /health
# latency while 300 slow-loris connections and 64 normal clients run, then one request with
# 1,000,000 header fields.
#
#   bench/hostile_run.sh                 # build/bin/slimkv
#   BIN=/path/to/old/slimkv bench/hostile_run.sh   # the same against another build
#
# Environment: BUILD (default build), BIN (default $BUILD/bin/slimkv), MODEL (default
# models/SmolLM2-135M-Instruct.Q4_1.gguf), THREADS (-t, default 2), SLOW (300), CLIENTS (64),
# PER_CLIENT (4), MAX_TOKENS (32), BOMB (1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${BIN:-$BUILD/bin/slimkv}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2}
SLOW=${SLOW:-300}
CLIENTS=${CLIENTS:-64}
PER_CLIENT=${PER_CLIENT:-4}
MAX_TOKENS=${MAX_TOKENS:-32}
BOMB=${BOMB:-1000000}

OUT=$(mktemp)
"$BIN" serve -m "$MODEL" -t "$THREADS" --port 0 > "$OUT" 2> "$OUT.err" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$OUT" "$OUT.err"' EXIT
for _ in $(seq 600); do
  if grep -q "listening on" "$OUT"; then break; fi
  sleep 0.1
done
PORT=$(grep -o 'http://127.0.0.1:[0-9]*' "$OUT" | grep -o '[0-9]*$')
curl -s -H 'Content-Type: application/json' "http://127.0.0.1:$PORT/v1/completions" \
  -d '{"prompt": "Hello", "max_tokens": 8}' > /dev/null
sleep 2
RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$PID/status)
THREADS_NOW=$(ls /proc/$PID/task | wc -l)
MODEL_MB=$(( $(stat -c %s "$MODEL") / 1048576 ))
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
echo "binary: $BIN"
echo "$(head -c 300 "$OUT.err" | grep -o 'budget [0-9.]* [KMG]iB' || true)"
echo "idle RSS with default flags: $((RSS_KB / 1024)) MiB ($THREADS_NOW threads; model file $MODEL_MB MiB)"
echo
"$BUILD/bin/loadgen_hostile" --port "$PORT" --pid "$PID" --slow "$SLOW" --clients "$CLIENTS" \
  --requests-per-client "$PER_CLIENT" --max-tokens "$MAX_TOKENS" --header-bomb "$BOMB" --max-seconds 240
echo "threads after: $(ls /proc/$PID/task | wc -l)"
