#!/usr/bin/env bash
# The slimkv commands work end to end on the default model: --help, info, run (plain, --chat,
# --verbose, greedy runs repeat), ppl and bench each exit 0 and print what their users read.
#
# Environment (set by ctest): SLIMKV_BIN, SLIMKV_MODEL_DIR, SLIMKV_SOURCE_DIR, SLIMKV_DATA_DIR.
# Runs in ~10 s (release), ~20 s under ASan/UBSan (2 cores).
source "$(dirname "$0")/cli_common.sh" smoke

# run_ok NAME ARG...: slimkv ARG... must exit 0 with no sanitizer report.
run_ok() {
  local name=$1
  shift
  timeout 300 "$BIN" "$@" >"$OUT" 2>"$ERR" </dev/null
  local rc=$?
  if [[ $rc -ne 0 ]]; then fail "$name: slimkv $* exited $rc"; return 1; fi
  if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$ERR"; then
    fail "$name: sanitizer report"
    return 1
  fi
  return 0
}

# has NAME FILE PATTERN: FILE (OUT or ERR) matches the extended regex PATTERN.
has() {
  if ! grep -qE -- "$3" "$2"; then fail "$1: no match for '$3'"; fi
}

if run_ok help --help; then
  for c in run ppl info bench; do has help "$OUT" "^ +$c "; done
fi
run_ok version --version && has version "$OUT" "^slimkv [0-9]"
run_ok run_help run --help && has run_help "$OUT" "--kv-mem"

if run_ok info info; then
  has info "$OUT" "architecture: +llama, 30 layers"
  has info "$OUT" "KV bytes per token"
  has info "$OUT" "fp16 +23040.0 +0.0 +23040.0"
  has info "$OUT" "int4 +5760.0 +720.0 +6480.0"
fi
run_ok info_short_name info smollm2-135m && has info_short_name "$OUT" "KV bytes per token"

if run_ok run run -p "Hello" -n 8 --temp 0; then
  # The prompt is echoed, then at least one more non-blank character is generated.
  has run "$OUT" "^Hello.*[^[:space:]]"
  if [[ $(wc -c <"$OUT") -le 7 ]]; then fail "run: no generated text"; fi
  has run "$ERR" "generated: [1-8] tokens \([0-9.]+ tokens/s\)"
  cp "$OUT" "$TMP/first.txt"
  # Greedy decoding repeats exactly.
  if run_ok run_repeat run -p "Hello" -n 8 --temp 0; then
    cmp -s "$OUT" "$TMP/first.txt" || fail "run_repeat: greedy output differs between two runs"
  fi
fi

if run_ok run_sampled run -p "Once upon a time" -n 8 --temp 0.8 --top-k 20 --top-p 0.9 --seed 7; then
  has run_sampled "$ERR" "tokens/s"
fi

if run_ok chat run --chat -p "What is the capital of France?" -n 16 --temp 0; then
  # The template is not echoed; the reply is.
  if ! grep -q "[[:alpha:]]" "$OUT"; then fail "chat: no reply text"; fi
  if grep -qF "<|im_start|>" "$OUT"; then fail "chat: the chat template leaked into the output"; fi
  has chat "$ERR" "tokens/s"
fi

if run_ok run_verbose run -v -p "Hello" -n 4 --temp 0; then
  has run_verbose "$ERR" "KV bytes per token: [0-9]+"
  has run_verbose "$ERR" "model: .*30 layers"
  has run_verbose "$ERR" "KV of this sequence"
fi

if run_ok run_fp32_kv run -p "Hello" -n 4 --temp 0 --kv fp32 -c 256 --kv-block 16; then
  has run_fp32_kv "$ERR" "tokens/s"
fi

if run_ok ppl ppl -f "$DATA/pg_essays.txt" --chunks 2; then
  has ppl "$OUT" "PPL = [0-9]+\.[0-9]+"
  has ppl "$OUT" "2 chunks"
  ppl=$(sed -nE 's/^PPL = ([0-9.]+).*/\1/p' "$OUT")
  if ! awk -v p="${ppl:-0}" 'BEGIN { exit !(p > 2 && p < 200) }'; then
    fail "ppl: perplexity '$ppl' is implausible for SmolLM2-135M on English prose"
  fi
fi

if run_ok bench bench --no-bandwidth --tests pp32 tg4 -r 1; then
  has bench "$OUT" "\| pp32 "
  has bench "$OUT" "\| tg4 "
fi

# The capacity planner reproduces the issue's example (no model file needed).
if run_ok plan plan --model llama-3.1-8b --gpu a100-80gb --weight-bits 4 --kv-mem-gib 74 --no-metadata \
    --kv fp16,int4 --svg "$TMP/plan.svg"; then
  has plan "$OUT" "^\| fp16 +\|.*\| +296 \| +74 \| +18 \| +4 \|$"
  has plan "$OUT" "^\| int4 +\|.*\| +1184 \| +296 \| +74 \| +18 \|$"
  has plan "$TMP/plan.svg" "^<svg "
fi

# Quantized KV, eviction, streaming perplexity, the K/V analysis and a small needle grid.
if run_ok run_int4 run -p "Hello" -n 8 --temp 0 --kv int4 --kv-policy sinks --kv-budget 64 -v; then
  has run_int4 "$ERR" "K int4:channel, V int4:token"
fi
# int4 with no residual window, so blocks seal, and a budget the stream passes, so it evicts.
if run_ok ppl_stream ppl -f "$DATA/pg_essays.txt" --stream --max-tokens 400 --kv int4 --kv-residual 0 \
    --kv-policy h2o --kv-budget 128; then
  has ppl_stream "$OUT" "^PPL = "
fi
if run_ok inspect inspect-kv -f "$DATA/pg_essays.txt" -n 128 --svg "$TMP/inspect.svg"; then
  has inspect "$OUT" "per channel in"
  has inspect "$TMP/inspect.svg" "^<svg "
fi
if run_ok needle needle --contexts 512 --depths 0,100 --svg "$TMP/needle.svg"; then
  has needle "$OUT" "accuracy"
  has needle "$TMP/needle.svg" "^<svg "
fi
# A policy at a fraction of each context: h2o stages the prompt at 16 bits up to twice its
# budget, more than the int4 context needs without it; the pool must hold that peak (before the
# fix the 1024-token cells were refused as too long for the pool).
if run_ok needle_h2o needle --contexts 256,1024 --depths 50 --max-new 4 --kv int4 --kv-policy h2o \
    --budget-fraction 0.5; then
  has needle_h2o "$OUT" "h2o.* at 50% of the context"
fi
if run_ok ruler_h2o ruler --tasks mk --contexts 1024 --samples 1 --kv int4 --kv-policy h2o --budget-fraction 0.5; then
  has ruler_h2o "$OUT" "^mean score"
fi

echo "$n_failed failed, $((SECONDS - start)) s"
[[ $n_failed -eq 0 ]]
