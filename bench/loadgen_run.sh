#!/usr/bin/env bash
# The serving figures of docs/BENCHMARKS.md ("Serving (issue: many users)") in one run, on this
# machine, loopback only. Every phase is bounded in requests and time.
#
#   bench/loadgen_run.sh [capacity] [throughput] [llama] [prefix] [soak] [oversub]   (default: all but oversub)
#
#   capacity    sequences a 2 GiB KV budget holds at 2K and 8K context, per preset
#               (bench/loadgen_capacity: a real pool filled through BeginStep/Append/EndStep)
#   throughput  slimkv serve, fp16 then int4: 1/4/16/64 clients, streamed completions
#   llama       the same load against llama.cpp's llama-server -np 16 (same model, f16 KV),
#               right after slimkv's fp16 run; LLAMA_SERVER=path/to/llama-server
#   prefix      32 requests sharing a ~1K-token system prompt, prefix cache on vs off
#   soak        1,000 requests with client cancellations and bad requests mixed in
#   cluster     32 requests sharing a ~1K-token system prompt, arriving STAGGER_MS apart (default
#               100), int4 KV: one instance (-t 2) with and without prefix sharing, and two
#               instances (-t 1 each, the same cores) behind round-robin, without and with a
#               shared Redis tier (--kv-redis; needs redis-server); each cold, then with the
#               system prompt answered once by the first instance before the 32 arrive
#   oversub     4x KV oversubscription (--kv-mem a quarter of what the concurrent requests need),
#               int4 KV: recompute (--no-prefix-cache) vs swap (prefix cache: preempted blocks
#               re-attached from RAM) vs swap + --kv-disk (and from disk when RAM evicted them)
#               (OVERSUB_CLIENTS, OVERSUB_PER_CLIENT, OVERSUB_PROMPT_WORDS, OVERSUB_MAX_TOKENS)
#
# Environment: BUILD (default build), STAGGER_MS (cluster), MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf),
# THREADS (default 2), LLAMA_SERVER (default: the llama.cpp build under /opt/peer, if any).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=$BUILD/bin
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2}
LLAMA_SERVER=${LLAMA_SERVER:-$(ls /opt/peer/*/vendor/llama.cpp/build/bin/llama-server 2>/dev/null | head -1 || true)}
PHASES=${*:-capacity throughput llama prefix soak}
CLIENTS=${CLIENTS:-1,4,16,64}
MAX_TOKENS=${MAX_TOKENS:-64}
PER_CLIENT=${PER_CLIENT:-3}

SERVER_PID=""
SERVER_PIDS=()  # every server still running (the cluster phase runs several)
stop_server() {
  for p in "${SERVER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${SERVER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  SERVER_PIDS=()
  SERVER_PID=""
}
trap stop_server EXIT

# start_slimkv ARGS...: starts slimkv serve on a free port; sets PORT.
start_slimkv() {
  local out
  out=$(mktemp)
  "$BIN/slimkv" serve -m "$MODEL" -t "$THREADS" --port 0 "$@" > "$out" 2> "$out.err" &
  SERVER_PID=$!
  SERVER_PIDS+=("$SERVER_PID")
  for _ in $(seq 600); do
    if grep -q "listening on" "$out"; then break; fi
    sleep 0.1
  done
  PORT=$(grep -o 'http://127.0.0.1:[0-9]*' "$out" | grep -o '[0-9]*$')
  rm -f "$out" "$out.err"
}

start_llama() {
  PORT=$((20000 + RANDOM % 20000))
  "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -np 16 -c $((16 * 1024)) --host 127.0.0.1 --port "$PORT" \
    -ctk f16 -ctv f16 --no-webui > /dev/null 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; then break; fi
    sleep 0.1
  done
}

echo "# slimkv serving figures: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), model $(basename "$MODEL"), $THREADS threads"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for phase in $PHASES; do
  case $phase in
    capacity)
      echo; echo "## capacity: sequences in a 2 GiB KV budget"
      "$BIN/loadgen_capacity" -m "$MODEL" --budget-gib 2 --contexts 2048,8192
      ;;
    throughput)
      for kv in fp16 int4; do
        echo; echo "## throughput: slimkv serve --kv $kv"
        start_slimkv --kv "$kv" -c 1024 --kv-mem 512 --max-running 64 --max-batch-tokens 512
        "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --label "slimkv $kv" --max-seconds 600 throughput \
          --clients "$CLIENTS" --requests-per-client "$PER_CLIENT" --max-tokens "$MAX_TOKENS" --level-seconds 120
        stop_server
        if [[ $kv == fp16 && " $PHASES " == *" llama "* && -x $LLAMA_SERVER ]]; then
          echo; echo "## throughput: llama-server -np 16 (f16 KV)"
          start_llama
          "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --label "llama-server f16" --max-seconds 600 throughput \
            --clients "$CLIENTS" --requests-per-client "$PER_CLIENT" --max-tokens "$MAX_TOKENS" --level-seconds 120
          stop_server
        fi
      done
      ;;
    llama) ;;  # runs inside throughput, right after slimkv fp16
    prefix)
      echo; echo "## prefix sharing: 32 requests sharing a ~1K-token system prompt"
      echo "| server | requests | errors | wall s | TTFT p50 | TTFT mean | TTFT p99 | prompt tokens | cached tokens | max cached | peak blocks | peak shared |"
      echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for mode in on off; do
        flag=""; [[ $mode == off ]] && flag="--no-prefix-cache"
        start_slimkv -c 2048 --kv-mem 1024 --max-running 32 $flag
        "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --label "sharing $mode" prefix --requests 32 --prefix-words 900
        stop_server
      done
      ;;
    cluster)
      stagger=${STAGGER_MS:-100}
      echo; echo "## two instances: 32 requests sharing a ~1K-token system prompt, one every $stagger ms, int4 KV"
      echo "| server | requests | errors | wall s | TTFT p50 | TTFT mean | TTFT p99 | prompt tokens | cached tokens | max cached | peak blocks | peak shared |"
      echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      common=(--kv int4 -c 2048 --max-running 32)
      for run in "1 instance, no sharing" "1 instance, sharing" "2 instances, own caches" "2 instances, Redis" \
                 "1 instance, sharing|warm" "2 instances, own caches|warm" "2 instances, Redis|warm"; do
        mode=${run%|warm}
        warm=(); label=$mode
        [[ $run == *'|warm' ]] && { warm=(--warm); label="$mode, seen once by instance 1"; }
        urls=""
        case $mode in
          "1 instance, no sharing") THREADS=2 start_slimkv "${common[@]}" --kv-mem 1024 --no-prefix-cache; urls=http://127.0.0.1:$PORT ;;
          "1 instance, sharing") THREADS=2 start_slimkv "${common[@]}" --kv-mem 1024; urls=http://127.0.0.1:$PORT ;;
          "2 instances"*)
            redis=()
            if [[ $mode == *Redis ]]; then
              rport=$((20000 + RANDOM % 20000))
              redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no --maxmemory 1gb \
                --maxmemory-policy allkeys-lru --logfile /dev/null &
              SERVER_PIDS+=($!)
              for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
              redis=(--kv-redis "127.0.0.1:$rport")
            fi
            for _ in 1 2; do
              THREADS=1 start_slimkv "${common[@]}" --kv-mem 512 "${redis[@]}"
              urls="$urls${urls:+,}http://127.0.0.1:$PORT"
            done
            ;;
        esac
        "$BIN/loadgen" --url "$urls" --label "$label" prefix --requests 32 --prefix-words 900 --stagger-ms "$stagger" \
          "${warm[@]}"
        stop_server
      done
      ;;
    soak)
      echo; echo "## soak: 1,000 requests, client cancellations and bad requests mixed in"
      start_slimkv -c 1024 --kv-mem 64 --max-running 16 --max-waiting 64
      "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --max-seconds 900 soak --requests 1000 --clients 16
      stop_server
      ;;
    oversub)
      oc=${OVERSUB_CLIENTS:-16}; opc=${OVERSUB_PER_CLIENT:-2}
      ow=${OVERSUB_PROMPT_WORDS:-64}; ot=${OVERSUB_MAX_TOKENS:-192}
      # What the concurrent requests need: clients x (prompt + generated) tokens x bytes per token of
      # int4 (from /metrics); the prompt of ow words is counted as 1.5 tokens a word, plus 16.
      start_slimkv --kv int4 -c 1024
      bpt=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "slimkv_kv_bytes_per_token" {print $2}')
      stop_server
      need_mib=$(python3 -c "print($oc * (int($ow * 1.5) + 16 + $ot) * $bpt / 2**20)")
      kv_mib=$(python3 -c "print(round($need_mib / 4, 2))")
      echo; echo "## 4x KV oversubscription: $oc clients x $opc requests, ~$ow-word prompts, $ot tokens each;"
      echo "## they need ${need_mib} MiB of int4 KV at once, --kv-mem $kv_mib"
      # OVERSUB_MODES repeats modes to interleave them on a shared machine (each run gets a fresh disk
      # directory and a fresh server: no run starts with another's blocks).
      for mode in ${OVERSUB_MODES:-recompute swap swap+disk}; do
        disk=$(mktemp -d)
        flags=()
        case $mode in
          recompute) flags=(--no-prefix-cache) ;;
          swap+disk) flags=(--kv-disk "$disk" --kv-disk-mem 1) ;;
        esac
        start_slimkv --kv int4 -c 1024 --kv-mem "$kv_mib" --max-running "$oc" --max-batch-tokens 512 "${flags[@]}"
        "$BIN/loadgen" --url "http://127.0.0.1:$PORT" --label "$mode" --max-seconds 600 throughput \
          --clients "$oc" --requests-per-client "$opc" --prompt-words "$ow" --max-tokens "$ot" --level-seconds 300
        curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^slimkv_(steps_total|preemptions_total|preempted_tokens_total|computed_tokens_total|kv_tier_(hits|misses)_total|kv_tier_fetch_decisions_total|kv_tier_read_bytes_total|prefill_tokens_per_second|kv_tier_fetch_bytes_per_second)' | sed "s/^/# $mode: /"
        echo "# $mode: load average $(cut -d' ' -f1-3 /proc/loadavg)"
        stop_server
        rm -rf "$disk"
      done
      ;;
    *) echo "unknown phase $phase"; exit 2 ;;
  esac
done
