#!/usr/bin/env bash
# Quality of every KV format against the fp16 cache (docs/BENCHMARKS.md, "Quantized KV: quality"):
# perplexity at ctx 2048 on the eval text, its delta to fp16, mean KL(fp16 || format) of the
# next-token distribution and top-1 agreement, with the bytes per token each layout stores.
#
#   bench/kv_quality.sh [NAME...]        (default: every configuration below)
#
# Environment: BUILD (build), MODEL (smollm2-135m), CTX (2048), CHUNKS (8), TEXT (data/pg_essays.txt).
# Prints one markdown row per configuration on stdout as it finishes; progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin/slimkv
MODEL=${MODEL:-smollm2-135m}
CTX=${CTX:-2048}
CHUNKS=${CHUNKS:-8}
TEXT=${TEXT:-data/pg_essays.txt}

# name|flags: the presets, then the comparisons the quantization issue asks for.
CONFIGS=(
  "fp32|--kv fp32"
  "bf16|--kv bf16"
  "fp8|--kv fp8"
  "fp8 e5m2|--kv fp8 --kv-k fp8e5m2 --kv-v fp8e5m2"
  "int8|--kv int8"
  "q8_0|--kv q8_0"
  "q8_0r|--kv q8_0r"
  "int4|--kv int4"
  "int4 (32-token blocks)|--kv int4 --kv-block 32"
  "int4 no residual|--kv int4 --kv-residual 0"
  "int4 K pre-RoPE|--kv int4 --kv-k int4:channel:pre"
  "int4 K per-token g32 + rot|--kv int4 --kv-k int4:token:g32:rot"
  "int4 K per-channel + rot|--kv int4 --kv-k int4:channel:rot"
  "int4 V per-channel|--kv int4 --kv-v int4:channel"
  "kivi4|--kv kivi4"
  "q4_0|--kv q4_0"
  "q4_0r|--kv q4_0r"
  "int3|--kv int4 --kv-k int3:channel --kv-v int3:token"
  "kivi2|--kv kivi2"
  "int2 K rot|--kv kivi2 --kv-k int2:channel:rot"
  # TurboQuant (docs/BENCHMARKS.md "TurboQuant KV")
  "tq4|--kv tq4"
  "tqk4v3|--kv tqk4v3"
  "tq3.5|--kv tqk4v3 --kv-k tq3.5 --kv-v tq3.5"
  "tq3|--kv tq3"
  "tq3 K mean|--kv tq3 --kv-k tq3:mean"
  "tq2.5|--kv tq2.5"
  "tq2.5 K mean|--kv tq2.5 --kv-k tq2.5:mean"
  "tqk3v2|--kv tqk3v2"
  "tqk3v2 K mean|--kv tqk3v2 --kv-k tq3:mean"
  "tq2|--kv tq2"
  "tqk4v3 residual 128|--kv tqk4v3 --kv-residual 128"
  "tq4 no residual|--kv tq4 --kv-residual 0"
  "tq3 no residual|--kv tq3 --kv-residual 0"
)

# With names: those configurations, in the order given.
selected=()
if (($#)); then
  for w in "$@"; do
    found=0
    for c in "${CONFIGS[@]}"; do [[ ${c%%|*} == "$w" ]] && selected+=("$c") && found=1; done
    ((found)) || { echo "unknown configuration '$w'" >&2; exit 2; }
  done
else
  selected=("${CONFIGS[@]}")
fi
echo "| configuration | flags | bytes/token | PPL | Δ vs fp16 | mean KL (nats) | same top-1 |"
echo "|---|---|---:|---:|---:|---:|---:|"
for c in "${selected[@]}"; do
  name=${c%%|*}
  flags=${c#*|}
  echo "[$(date -u +%H:%M:%S)] $name: $BIN ppl -m $MODEL -f $TEXT -c $CTX --chunks $CHUNKS $flags" >&2
  # shellcheck disable=SC2086
  out=$("$BIN" ppl -m "$MODEL" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" $flags 2>&1) || {
    echo "| $name | \`$flags\` | error | | | | |"
    echo "$out" | tail -3 >&2
    continue
  }
  bytes=$(sed -nE 's/.*\(([0-9]+) bytes\/token\).*/\1/p' <<< "$out" | head -1)
  ppl=$(sed -nE 's/^PPL = ([0-9.]+).*/\1/p' <<< "$out")
  delta=$(sed -nE 's/.*delta ([-+0-9.]+%).*/\1/p' <<< "$out")
  kl=$(sed -nE 's/.*mean KL\(base \|\| this\) = ([0-9.e+-]+) \+\/- ([0-9.e+-]+).*/\1 ± \2/p' <<< "$out")
  top1=$(sed -nE 's/.*same top-1 ([0-9.]+%).*/\1/p' <<< "$out")
  echo "| $name | \`$flags\` | $bytes | $ppl | $delta | $kl | $top1 |"
done
