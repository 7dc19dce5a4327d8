#!/usr/bin/env bash
# End-to-end decode speed per KV preset at a long context (docs/BENCHMARKS.md, "Quantized KV:
# decode speed"): `slimkv bench --tests tgN@dD` for every preset, interleaved round by round so
# the machine's drift hits all presets alike; the median of the rounds and its ratio to fp16.
#
#   bench/kv_decode.sh [PRESET...]     (default: every preset of `slimkv info`)
#
# Environment: BUILD (build), MODEL (smollm2-135m), TEST (tg64@d8192), ROUNDS (3), REPS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin/slimkv
MODEL=${MODEL:-smollm2-135m}
TEST=${TEST:-tg64@d8192}
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-2}
if (($#)); then presets=("$@"); else
  mapfile -t presets < <("$BIN" info -m "$MODEL" | sed -nE '/^  preset/,$ s/^  ([a-z0-9_]+) +[0-9].*/\1/p')
fi
declare -A runs
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $MODEL, $TEST, $ROUNDS rounds x $REPS reps, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq "$ROUNDS"); do
  for p in "${presets[@]}"; do
    out=$("$BIN" bench -m "$MODEL" --kv "$p" --tests "$TEST" -r "$REPS" --no-bandwidth 2>&1)
    ts=$(sed -nE "s/^\| *$TEST *\| *([0-9.]+).*/\1/p" <<< "$out" | head -1)
    [[ -n $ts ]] || { echo "cannot read: $out" >&2; exit 1; }
    runs[$p]+="$ts "
    echo "[round $r] $p: $ts t/s" >&2
  done
done
median() { tr ' ' '\n' <<< "$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
base=$(median "${runs[fp16]:-}")
echo "| preset | $TEST tokens/s (median) | ratio to fp16 | rounds |"
echo "|---|---:|---:|---|"
for p in "${presets[@]}"; do
  m=$(median "${runs[$p]}")
  ratio=$( [[ -n $base ]] && awk -v a="$m" -v b="$base" 'BEGIN {printf "%.2f", a / b}' || echo "")
  echo "| $p | $m | $ratio | ${runs[$p]}|"
done
echo "# load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
