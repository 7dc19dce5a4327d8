#!/usr/bin/env bash
# A llama.cpp user's habits work (issue 12, finding 13):
#   -ctk/-ctv (and --cache-type-k/-v) set the KV formats, mapped from llama.cpp's type names;
#   a type with no equivalent (q5_0) is an error naming the supported ones;
#   -fa / -fa on|off is accepted (attention is always fused); -np sets serve's --parallel;
#   -ngl warns that there is no GPU offload and runs; -hf is a clear error, not the help text;
#   llama.cpp's other multi-letter flags (-tb) are named as such, not misread as -t b;
#   --help of every command shows every option's default;
#   -t defaults to the CPUs the process may use (taskset counts);
#   progress lines (model load, ppl, bench, needle) reach stderr when it is not a terminal.
# Each case failed on the code before (bb8f74c): -ctk q8_0 was "-c tk", -ngl 99 "-n gl", -fa
# "-f a", -hf printed the help and exited 0, -t was always 2, no progress without a terminal.
#
# Environment (set by ctest): SLIMKV_BIN, SLIMKV_MODEL_DIR, SLIMKV_SOURCE_DIR, SLIMKV_DATA_DIR.
# Runs in ~30 s (release; 60 s with the machine loaded).
source "$(dirname "$0")/cli_common.sh" llama_habits
n_cases=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run NAME WANT_RC ARG...: slimkv ARG... (stdout, stderr to files, neither a terminal) must
# exit with WANT_RC and no sanitizer report. Returns non-zero (after reporting) otherwise.
run() {
  local name=$1 want=$2
  shift 2
  n_cases=$((n_cases + 1))
  timeout 300 "$BIN" "$@" >"$OUT" 2>"$ERR" </dev/null
  local rc=$?
  if [[ $rc -ne $want ]]; then fail "$name: slimkv $* exited $rc, expected $want"; return 1; fi
  if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$ERR"; then fail "$name: sanitizer report"; return 1; fi
  return 0
}

# has NAME FILE PATTERN / lacks NAME FILE PATTERN: FILE matches (does not match) the regex.
has() { grep -qE -- "$3" "$2" || fail "$1: no match for '$3'"; }
lacks() { ! grep -qE -- "$3" "$2" || fail "$1: unexpected match for '$3'"; }

GEN=(-p "The capital of France is" -n 2 --temp 0)

# --- -ctk / -ctv: llama.cpp's cache types, mapped.
run ctk_ctv 0 run "${GEN[@]}" -v -ctk q8_0 -ctv q4_0 && has ctk_ctv "$ERR" "^KV: K q8_0, V q4_0,"
run ctk_q4_1 0 run "${GEN[@]}" -v -ctk f16 -ctv q4_1 && has ctk_q4_1 "$ERR" "^KV: K f16, V int4:g32,"
run cache_type_long 0 run "${GEN[@]}" -v --cache-type-k bf16 --cache-type-v f32 &&
  has cache_type_long "$ERR" "^KV: K bf16, V f32,"
run ctk_slimkv_format 0 run "${GEN[@]}" -v -ctk int8:channel && has ctk_slimkv_format "$ERR" "^KV: K int8:channel, V f16,"
run ctk_q5_0 2 run "${GEN[@]}" -ctk q5_0 && has ctk_q5_0 "$ERR" "^error: .*q5_0 has no slimkv equivalent.*f16, bf16, q8_0, q4_0, q4_1"
run ctk_and_kv_k 2 run "${GEN[@]}" -ctk q8_0 --kv-k int4 && has ctk_and_kv_k "$ERR" "^error: give --kv-k or --cache-type-k"
run ctk_ppl 0 ppl -f "$DATA/pg_essays.txt" -c 128 --chunks 1 -ctk q8_0 -ctv q8_0 --kl-base none &&
  has ctk_ppl "$OUT" "KV K q8_0, V q8_0"

# --- -fa: accepted, with or without a value.
run fa 0 run "${GEN[@]}" -fa && lacks fa "$ERR" "^error"
run fa_on 0 run "${GEN[@]}" -fa on
run fa_off 0 run "${GEN[@]}" -fa off && has fa_off "$ERR" "^warning: --flash-attn off"
run fa_bad 2 run "${GEN[@]}" -fa sometimes && has fa_bad "$ERR" "^error: --flash-attn.*'sometimes'"

# --- -ngl: no GPU, a warning, and the run goes on; -ngl 0 says nothing.
run ngl 0 run "${GEN[@]}" -ngl 99 && has ngl "$ERR" "^warning: --n-gpu-layers 99 ignored: slimkv runs on the CPU"
run ngl_zero 0 run "${GEN[@]}" -ngl 0 && lacks ngl_zero "$ERR" "warning"

# --- -hf: an error naming what to do, not the help text with exit 0.
run hf 2 run -hf ggml-org/gemma-3-1b-it-GGUF -p hi && has hf "$ERR" "^error: --hf-repo: slimkv does not download.*-m"
lacks hf "$OUT" "^Usage"

# --- llama.cpp's multi-letter flags slimkv lacks are named, not read as -t b / -m g.
run tb 2 run "${GEN[@]}" -tb 4 && has tb "$ERR" "^error: -tb is llama.cpp's --threads-batch"
run mg 2 run "${GEN[@]}" -mg 1 && has mg "$ERR" "^error: -mg is llama.cpp's --main-gpu"

# --- -np: serve's --parallel (the KV budget holds -np full contexts).
n_cases=$((n_cases + 1))
timeout 60 "$BIN" serve -np 3 -c 1024 --port 0 >"$OUT" 2>"$ERR" </dev/null &
pid=$!
for _ in $(seq 300); do grep -q "^slimkv serve: model" "$ERR" && break; sleep 0.1; done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
# 3 sequences x 1024 tokens x 23040 bytes/token (SmolLM2, fp16) = 67.50 MiB
has np "$ERR" "budget 67.50 MiB"

# --- --help: every option that takes a value shows its default, in every command.
commands=$("$BIN" --help | awk '/^Subcommands:/ {s = 1; next} s && /^  [a-z]/ {print $1}')
[[ -n $commands ]] || fail "help: no subcommands listed"
for c in $commands; do
  run "help_$c" 0 "$c" --help || continue
  # One entry per option: its names and type, then the description (possibly on the next line).
  missing=$(awk '
    /^Positionals:/ {skip = 1} /^Options:/ {skip = 0}
    skip {next}
    /^  -/ { if (entry != "") check(entry); entry = $0; next }
    /^    / && entry != "" { entry = entry " " $0; next }
    { if (entry != "") check(entry); entry = "" }
    END { if (entry != "") check(entry) }
    function check(e) {
      if (e !~ /^  -[^ ]+ +(TEXT|INT|UINT|FLOAT|[A-Z]+:)/) return  # a flag
      if (e ~ /REQUIRED/ || e ~ /Print this help/) return
      if (e ~ /^  -[^ ]+ [A-Z]+(:[A-Z]+ in \[[^]]*\])?=/ || e ~ /\(default|; default|, default/) return
      print e
    }' "$OUT")
  if [[ -n $missing ]]; then
    n_failed=$((n_failed + 1))
    echo "FAIL help_$c: options without a default in --help:"
    echo "$missing" | sed 's/^/    /'
  fi
done

# --- -t: the CPUs this process may use (bench prints the thread count).
if command -v taskset >/dev/null; then
  n_cases=$((n_cases + 1))
  timeout 300 taskset -c 0 "$BIN" bench --no-bandwidth --tests pp16 -r 1 >"$OUT" 2>"$ERR" </dev/null
  has threads_one_cpu "$OUT" ", 1 threads,"
fi
run threads_default 0 bench --no-bandwidth --tests pp16 -r 1 && has threads_default "$OUT" ", $(nproc) threads,"

# --- Progress lines on a stderr that is a file: model load, perplexity, bench, needle.
run progress_ppl 0 ppl -f "$DATA/pg_essays.txt" -c 128 --chunks 3 --kl-base none && {
  has progress_ppl "$ERR" "^loading model .*SmolLM2"
  has progress_ppl "$ERR" "^loaded .* in [0-9.]+ s"
  has progress_ppl "$ERR" "^perplexity: 1/3 chunks"
  has progress_ppl "$ERR" "^perplexity: done in"
  lacks progress_ppl "$ERR" $'\r'
}
run progress_bench 0 bench --no-bandwidth --tests pp16 -r 2 && has progress_bench "$ERR" "^bench pp16: 1/3 runs"
run progress_needle 0 needle --contexts 256 --depths 50 --max-new 4 && has progress_needle "$ERR" "^needle: 1/1 cells"

echo "$n_cases cases, $n_failed failed, $((SECONDS - start)) s"
[[ $n_failed -eq 0 ]]
