#!/usr/bin/env bash
# `needle --prompt` (and ruler's): auto puts the question through the chat template when the
# model file has one (SmolLM2-135M-Instruct) and plainly ("Question: ... Answer:") when it has
# none (the base Gemma-3-270M, which answers only that way); chat and plain force either;
# anything else is refused. The JSON says which prompt ran. About 20 s.
set -u
BIN=${SLIMKV_BIN:?set SLIMKV_BIN to the slimkv binary}
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export SLIMKV_MODEL_DIR=${SLIMKV_MODEL_DIR:-$SRC/models}
cd "$SRC"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
prompt_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt"])' "$1"; }
found_of() { python3 -c 'import json,sys; print(sum(c["found"] for c in json.load(open(sys.argv[1]))["cells"]))' "$1"; }

"$BIN" needle --contexts 512 --depths 100 --json "$T/smol.json" > "$T/smol.out" 2>&1 || fail "smollm2 auto: $(tail -3 "$T/smol.out")"
[[ $(prompt_of "$T/smol.json") == chat ]] || fail "smollm2 (chat template) did not get the chat prompt"
"$BIN" needle --contexts 512 --depths 100 --prompt plain --json "$T/smolp.json" > "$T/smolp.out" 2>&1 || fail "smollm2 plain"
[[ $(prompt_of "$T/smolp.json") == plain ]] || fail "--prompt plain did not run plain"
grep -q "plain prompt" "$T/smolp.out" || fail "the header does not say plain prompt: $(head -1 "$T/smolp.out")"
"$BIN" ruler --tasks mk --contexts 512 --samples 1 --prompt plain --json "$T/ruler.json" > "$T/ruler.out" 2>&1 ||
  fail "ruler plain: $(tail -3 "$T/ruler.out")"
[[ $(prompt_of "$T/ruler.json") == plain ]] || fail "ruler --prompt plain did not run plain"
"$BIN" ruler --tasks mk --contexts 512 --samples 1 --json "$T/rulerc.json" > "$T/rulerc.out" 2>&1 ||
  fail "ruler auto: $(tail -3 "$T/rulerc.out")"
[[ $(prompt_of "$T/rulerc.json") == chat ]] || fail "ruler on smollm2 did not get the chat prompt"
if "$BIN" needle --contexts 512 --depths 100 --prompt jinja > "$T/bad.out" 2>&1; then fail "--prompt jinja accepted"; fi
grep -q -- "--prompt" "$T/bad.out" || fail "the error does not name --prompt: $(cat "$T/bad.out")"

if [[ -f $SLIMKV_MODEL_DIR/gemma-3-270m-q4_k_m.gguf ]]; then
  "$BIN" needle -m gemma3-270m --contexts 512 --depths 50,100 --json "$T/gemma.json" > "$T/gemma.out" 2>&1 ||
    fail "gemma auto: $(tail -3 "$T/gemma.out")"
  [[ $(prompt_of "$T/gemma.json") == plain ]] || fail "gemma (no chat template) did not get the plain prompt"
  [[ $(found_of "$T/gemma.json") -ge 1 ]] || fail "gemma found no needle with the plain prompt: $(tail -4 "$T/gemma.out")"
  "$BIN" ruler -m gemma3-270m --tasks mk --contexts 512 --samples 1 --json "$T/gruler.json" > "$T/gruler.out" 2>&1 ||
    fail "gemma ruler auto: $(tail -3 "$T/gruler.out")"
  [[ $(prompt_of "$T/gruler.json") == plain ]] || fail "ruler on gemma (no chat template) did not get the plain prompt"
elif [[ -n ${SLIMKV_REQUIRE_MODELS:-} ]]; then
  fail "Gemma-3 model missing (SLIMKV_REQUIRE_MODELS is set)"
else
  echo "gemma-3 model absent: its half skipped"
fi
echo "needle prompts: ok"
