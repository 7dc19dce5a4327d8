#!/usr/bin/env bash
# Builds the GGUF fuzzer (clang, libFuzzer + ASan + UBSan) in build-fuzz/ and runs it.
#
#   tools/run_fuzz.sh [SECONDS]     (default 60)
#
# The corpus grows in build-fuzz/fuzz/corpus (kept between runs), seeded by small valid files
# from tests/fuzz/make_gguf_seeds.cc. A crash, sanitizer report, out-of-memory or slow input
# is saved under build-fuzz/fuzz/artifacts/ and makes this script exit non-zero; reproduce it
# with build-fuzz/tests/fuzz/gguf_fuzz <artifact>.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
work="$build/fuzz"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLIMKV_FUZZ=ON -DSLIMKV_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" -j2 gguf_fuzz make_gguf_seeds

mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
"$build/tests/fuzz/make_gguf_seeds" "$work/seeds"

# -rss_limit_mb: a file that makes the reader allocate without bound is a finding too.
"$build/tests/fuzz/gguf_fuzz" "$work/corpus" "$work/seeds" \
  -max_len=65536 \
  -max_total_time="$seconds" \
  -timeout=10 \
  -rss_limit_mb=1024 \
  -dict="$root/tests/fuzz/gguf.dict" \
  -artifact_prefix="$work/artifacts/" \
  -print_final_stats=1
