#!/usr/bin/env bash
# The dashboard page rendered by headless Chromium while requests stream (tests/server/
# dashboard.py): the screenshot must show the KV pool bar with per-sequence segments.
# SLIMKV_DASHBOARD_PNG=path keeps the screenshot. ~15 s on 2 cores.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
cd "$SRC/tests/server"
exec "$PYTHON" dashboard.py
