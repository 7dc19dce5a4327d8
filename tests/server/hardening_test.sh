#!/usr/bin/env bash
# `slimkv serve` for operators (tests/server/hardening.py, issue 12 findings 6-11): idle memory,
# connections without threads, admission by the KV pool, cancellation of non-streaming
# requests, the time limit, tenants per API key, Host/Origin/CORS, keys from a file and the
# environment, access log and request ids, vLLM metric names. Loopback only, ~60 s on 2 cores.
set -eu
SRC=${SLIMKV_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PYTHON=${SLIMKV_VENV_PYTHON:-$SRC/.venv/bin/python}
cd "$SRC/tests/server"
exec "$PYTHON" hardening.py
