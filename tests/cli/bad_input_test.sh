#!/usr/bin/env bash
# Bad input never crashes slimkv: truncated, corrupted and hostile GGUF files, models that are
# valid GGUF but not a usable model, missing files, bad flags, prompts that do not fit, invalid
# UTF-8. Every case must exit non-zero without a signal (exit code < 128), print
# "error: <message>" on stderr, and name what is wrong (the file, field, tensor or flag); no
# sanitizer report may appear. Flag and prompt errors must also give their documented exit
# code (2 bad argument, 3 not found, 4 bad file, 5 KV budget exhausted: cli/common.cc Fail).
#
# The GGUF cases are crafted from the real model by make_bad_ggufs.py (byte patches and
# re-serialised headers, tensor data left as a hole) into a temporary directory; it lists each
# case with the commands that must reject it and the phrases the message must hold.
#
# Environment (set by ctest): SLIMKV_BIN, SLIMKV_MODEL_DIR, SLIMKV_SOURCE_DIR,
# SLIMKV_VENV_PYTHON, SLIMKV_DATA_DIR. Runs in ~15 s, release or under ASan/UBSan (2 cores).
set -u

BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
DATA=${SLIMKV_DATA_DIR:-$SRC/data}
MODEL=$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
# A case that takes longer than this is hung; under the sanitizers a full model load takes ~3 s.
CASE_TIMEOUT=${SLIMKV_CASE_TIMEOUT:-60}

if [[ ! -x $BIN ]]; then echo "FAIL: slimkv binary '$BIN' not found"; exit 1; fi
if [[ ! -f $MODEL ]]; then echo "FAIL: model '$MODEL' not found (run make models)"; exit 1; fi
if [[ ! -f $DATA/pg_essays.txt ]]; then echo "FAIL: '$DATA/pg_essays.txt' not found"; exit 1; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/slimkv_bad_input.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Sanitizer reports must fail the run even when the process would carry on.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

n_cases=0
n_failed=0
start=$SECONDS
VMEM_CAP_KB=  # set for the crafted GGUF files below

# expect NAME RC PHRASE... -- ARG...
# Runs `slimkv ARG...`; RC is the exact exit code wanted, or "any" for any code in 1..127.
# Every PHRASE must appear (as a fixed string) in stderr, after an "error:" line.
expect() {
  local name=$1 want_rc=$2
  shift 2
  local phrases=()
  while [[ $# -gt 0 && $1 != -- ]]; do phrases+=("$1"); shift; done
  shift  # the --
  n_cases=$((n_cases + 1))
  local out=$TMP/out.txt err=$TMP/err.txt rc
  (
    if [[ -n $VMEM_CAP_KB ]]; then ulimit -v "$VMEM_CAP_KB"; fi
    exec timeout "$CASE_TIMEOUT" "$BIN" "$@" >"$out" 2>"$err" </dev/null
  )
  rc=$?
  local problems=()
  if [[ $rc -eq 0 ]]; then
    problems+=("exit code 0")
  elif [[ $rc -eq 124 ]]; then
    problems+=("timed out after ${CASE_TIMEOUT}s")
  elif [[ $rc -ge 128 ]]; then
    problems+=("killed by signal $((rc - 128)) (exit code $rc)")
  elif [[ $want_rc != any && $rc -ne $want_rc ]]; then
    problems+=("exit code $rc, expected $want_rc")
  fi
  local marker
  for marker in "Segmentation fault" "Aborted" "AddressSanitizer" "LeakSanitizer" "runtime error" \
                "terminate called" "CHECK failed" "Check failed"; do
    if grep -qF "$marker" "$err"; then problems+=("stderr shows '$marker'"); fi
  done
  if ! grep -q '^error: ' "$err"; then problems+=("no 'error: ' line on stderr"); fi
  local p
  for p in "${phrases[@]}"; do
    if ! grep -qF -- "$p" "$err"; then problems+=("message lacks '$p'"); fi
  done
  if [[ ${#problems[@]} -gt 0 ]]; then
    n_failed=$((n_failed + 1))
    echo "FAIL $name: slimkv $*"
    for p in "${problems[@]}"; do echo "    $p"; done
    echo "    stderr: $(head -c 2000 "$err")"
  else
    echo "ok   $name (exit $rc): $(grep -m1 '^error: ' "$err" | head -c 240)"
  fi
}

RUN=(run -p Hello -n 4)  # a run that succeeds with the default model

# --- Model files that are missing or are not files.
expect missing_model_path 3 "$TMP/nope.gguf" "does not exist" -- run -m "$TMP/nope.gguf" -p Hello -n 1
expect unknown_model_name 3 "no-such-model" "not found" -- run -m no-such-model -p Hello -n 1
expect model_is_directory 2 "$TMP" "not a regular file" -- run -m "$TMP" -p Hello -n 1
expect info_missing_file 3 "$TMP/nope.gguf" -- info "$TMP/nope.gguf"
expect info_directory 2 "$TMP" "not a regular file" -- info "$TMP"
expect ppl_model_is_directory 2 "not a regular file" -- ppl -m "$TMP" -f "$DATA/pg_essays.txt"

# --- Flags: unknown, malformed, out of range.
expect no_command 2 "subcommand" --
expect unknown_flag 2 "--bogus" -- run --bogus
expect unknown_kv_preset 2 "unknown KV preset 'q3-bogus'" "valid presets:" "fp16" "fp32" -- "${RUN[@]}" --kv q3-bogus
expect temp_negative 2 "--temp" "-1" -- "${RUN[@]}" --temp -1
expect temp_nan 2 "--temp" -- "${RUN[@]}" --temp nan
expect temp_not_a_number 2 "--temp" "abc" -- "${RUN[@]}" --temp abc
expect top_p_2 2 "--top-p" "2" -- "${RUN[@]}" --top-p 2
expect top_p_0 2 "--top-p" -- "${RUN[@]}" --top-p 0
expect min_p_1 2 "--min-p" -- "${RUN[@]}" --min-p 1
expect repeat_penalty_0 2 "--repeat-penalty" -- "${RUN[@]}" --repeat-penalty 0
expect repeat_last_n_negative 2 "--repeat-last-n" -- "${RUN[@]}" --repeat-last-n -3
expect n_predict_negative 2 "--n-predict" "-1" -- run -p Hello -n -1
expect ctx_negative 2 "--ctx-size" "-5" -- run -p Hello -n 1 -c -5
expect threads_zero 2 "--threads" -- run -p Hello -n 1 -t 0
expect batch_zero 2 "--batch-size" -- run -p Hello -n 1 -b 0
expect kv_block_8 2 "block size 8" "multiple of 16" -- run -p Hello -n 1 --kv-block 8
expect kv_block_17 2 "block size 17" "multiple of 16" -- run -p Hello -n 1 --kv-block 17
expect kv_mem_negative 2 "--kv-mem" -- run -p Hello -n 1 --kv-mem -1
expect kv_mem_nan 2 "--kv-mem" "nan" -- run -p Hello -n 1 --kv-mem nan
expect kv_mem_huge 2 "--kv-mem" -- run -p Hello -n 1 --kv-mem 1e30
expect ppl_chunks_zero 2 "--chunks" -- ppl -f "$DATA/pg_essays.txt" --chunks 0
expect ppl_ctx_too_small 2 "at least 16" -- ppl -f "$DATA/pg_essays.txt" -c 1 --chunks 1
expect bench_test_malformed 2 "'xyz'" "ppN" -- bench --no-bandwidth --tests xyz
expect bench_test_huge 2 "'pp99999999999'" -- bench --no-bandwidth --tests pp99999999999
expect bench_test_empty 2 "'pp0'" -- bench --no-bandwidth --tests pp0

# --- Prompts: empty, unreadable, invalid UTF-8, longer than the context, larger than the KV budget.
printf 'ab\xff\xfecd' >"$TMP/bad_utf8.txt"
printf 'caf\xc3' >"$TMP/cut_utf8.txt"  # a sequence cut short at the end
printf 'x\xed\xa0\x80y' >"$TMP/surrogate.txt"  # UTF-16 surrogates are not UTF-8
: >"$TMP/empty.txt"
head -c 20000 "$DATA/pg_essays.txt" | sed '$d' >"$TMP/long.txt"  # ~4,000 tokens, whole lines
expect empty_prompt 2 "no prompt" -- run -p "" -n 1
expect no_prompt 2 "no prompt" -- run -n 1
expect empty_prompt_file 2 "$TMP/empty.txt" "empty" -- run -f "$TMP/empty.txt" -n 1
expect missing_prompt_file 3 "$TMP/none.txt" -- run -f "$TMP/none.txt" -n 1
expect prompt_file_is_directory 2 "$TMP" "directory" -- run -f "$TMP" -n 1
expect prompt_invalid_utf8 2 "not valid UTF-8" "offset 2" -- run -p $'ab\xffcd' -n 1
expect prompt_file_invalid_utf8 2 "not valid UTF-8" "offset 2" -- run -f "$TMP/bad_utf8.txt" -n 1
expect prompt_cut_utf8 2 "not valid UTF-8" "offset 3" -- run -f "$TMP/cut_utf8.txt" -n 1
expect prompt_surrogate 2 "not valid UTF-8" "offset 1" -- run -f "$TMP/surrogate.txt" -n 1
expect system_invalid_utf8 2 "--system" "not valid UTF-8" -- run --chat --system $'sys\xc0\xafx' -p Hello -n 1
expect ppl_invalid_utf8 2 "$TMP/bad_utf8.txt" "not valid UTF-8" -- ppl -f "$TMP/bad_utf8.txt"
expect ppl_missing_file 3 "$TMP/none.txt" -- ppl -f "$TMP/none.txt"
expect ppl_text_too_short 2 "0 tokens" -- ppl -f "$TMP/empty.txt"
expect prompt_longer_than_context 2 "does not fit in the context of 64 tokens" -- run -f "$TMP/long.txt" -c 64 -n 1
expect chat_prompt_longer_than_context 2 "does not fit in the context of 16 tokens" -- run --chat -p "Hello there, how are you?" -c 16 -n 1
# Refused before it runs (the scheduler checks the whole request against the pool), not
# exhausted part way through.
expect kv_pool_too_small 2 "bytes of KV cache" "--kv-mem" -- run -f "$TMP/long.txt" -c 8192 --kv-mem 1 -n 1

# --- Crafted GGUF files. Each runs under a cap on its address space (not under the sanitizers,
# which reserve terabytes of it): a file that makes slimkv allocate far more than the model
# needs then ends in std::bad_alloc and an abort, and the case fails, instead of taking the
# machine's memory. A normal load of the model needs about 400 MB.
if [[ -z ${SLIMKV_SANITIZED:-} ]]; then VMEM_CAP_KB=${SLIMKV_VMEM_CAP_KB:-1000000}; fi
if ! "$PYTHON" "$SRC/tests/cli/make_bad_ggufs.py" "$MODEL" "$TMP/gguf" >"$TMP/make.log" 2>&1; then
  echo "FAIL: make_bad_ggufs.py failed:"
  cat "$TMP/make.log"
  exit 1
fi
n_files=0
while IFS=$'\t' read -r -a row; do
  name=${row[0]} commands=${row[1]}
  phrases=("${row[@]:2}")
  file=$TMP/gguf/$name.gguf
  n_files=$((n_files + 1))
  IFS=, read -r -a cmds <<<"$commands"
  for c in "${cmds[@]}"; do
    case $c in
      info) expect "gguf:$name:info" any "${phrases[@]}" -- info "$file" ;;
      run) expect "gguf:$name:run" any "${phrases[@]}" -- run -m "$file" -p Hello -n 1 --temp 0 ;;
      chat) expect "gguf:$name:chat" any "${phrases[@]}" -- run --chat -m "$file" -p Hello -n 1 --temp 0 ;;
      *) echo "FAIL: unknown command '$c' for $name in cases.tsv"; n_failed=$((n_failed + 1)) ;;
    esac
  done
done <"$TMP/gguf/cases.tsv"
VMEM_CAP_KB=
if [[ $n_files -lt 40 ]]; then
  echo "FAIL: only $n_files crafted GGUF cases"
  n_failed=$((n_failed + 1))
fi

# The harness itself: the default model still works with the flags the cases built on.
n_cases=$((n_cases + 1))
if ! timeout "$CASE_TIMEOUT" "$BIN" "${RUN[@]}" --temp 0 >"$TMP/out.txt" 2>"$TMP/err.txt"; then
  n_failed=$((n_failed + 1))
  echo "FAIL control: slimkv ${RUN[*]} failed: $(head -c 2000 "$TMP/err.txt")"
fi

echo "$n_cases cases ($n_files crafted GGUF files), $n_failed failed, $((SECONDS - start)) s"
[[ $n_failed -eq 0 ]]
