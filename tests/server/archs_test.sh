#!/usr/bin/env bash
# `slimkv serve` on a tiny random-weight GGUF of every architecture (tests/server/archs.py):
# chat through the model's template and a streamed completion, int4 KV with sinks eviction.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
if ! "$PYTHON" -c "import openai, gguf, numpy" 2>/dev/null; then
  echo "FAIL: openai, gguf or numpy is missing from $PYTHON (run tools/setup.sh)"
  exit 1
fi
cd "$SRC/tests/server"
exec "$PYTHON" archs.py
