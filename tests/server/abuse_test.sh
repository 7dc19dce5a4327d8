#!/usr/bin/env bash
# `slimkv serve` under hostile clients (tests/server/abuse.py, issue 12 findings 1-5): bodies
# past --max-body in every framing, header floods, slow-loris and the per-client cap,
# request smuggling framings, pipelining, SIGTERM with slow connections. Loopback only, a few
# MiB sent per check, ~40 s on 2 cores.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
cd "$SRC/tests/server"
exec "$PYTHON" abuse.py
