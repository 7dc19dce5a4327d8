#!/usr/bin/env bash
# The API an evaluator uses (tests/server/api_eval.py): perplexity from echo + logprobs equals
# `slimkv ppl` on the same windows, logprobs on chat and completions, /tokenize and
# /detokenize, penalties. ~40 s on 2 cores.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
cd "$SRC/tests/server"
exec "$PYTHON" api_eval.py
