#!/usr/bin/env bash
# `slimkv serve` end to end with the official openai Python client (tests/server/e2e.py):
# completions, chat, streaming with usage, errors, 401/404/413/429, metrics, prefix-cache
# hits, disk tier, recall spilling to the disk tier, disconnect -> cancel, SIGTERM drain. Loopback
# only. ~30 s release on 2 cores.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
if ! "$PYTHON" -c "import openai" 2>/dev/null; then
  echo "FAIL: the openai package is missing from $PYTHON (run tools/setup.sh)"
  exit 1
fi
cd "$SRC/tests/server"
exec "$PYTHON" e2e.py
