#!/usr/bin/env bash
# Builds the fuzzers (clang, libFuzzer + ASan + UBSan) in build-fuzz/ and runs each in turn:
#   gguf_fuzz    the GGUF reader and the dequantizers
#   vocab_fuzz   what the metadata drives: model configuration, vocabulary, tokenizers, chat
#                template
#
#   tools/run_fuzz.sh [SECONDS] [TARGET...]     (default 60 seconds per target, both targets)
#
# Each corpus grows in build-fuzz/fuzz/corpus-<target> (kept between runs), seeded by small
# valid files from tests/fuzz/make_gguf_seeds.cc. A crash, sanitizer report, out-of-memory or
# slow input is saved under build-fuzz/fuzz/artifacts/ and makes this script exit non-zero;
# reproduce it with build-fuzz/tests/fuzz/<target> <artifact>.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(gguf_fuzz vocab_fuzz); fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
work="$build/fuzz"

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSLIMKV_FUZZ=ON -DSLIMKV_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" -j2 "${targets[@]}" make_gguf_seeds

mkdir -p "$work/seeds" "$work/artifacts"
"$build/tests/fuzz/make_gguf_seeds" "$work/seeds"

for target in "${targets[@]}"; do
  echo "== $target for $seconds s"
  mkdir -p "$work/corpus-$target"
  # -rss_limit_mb: a file that makes the reader allocate without bound is a finding too.
  "$build/tests/fuzz/$target" "$work/corpus-$target" "$work/seeds" \
    -max_len=65536 \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=1024 \
    -dict="$root/tests/fuzz/gguf.dict" \
    -artifact_prefix="$work/artifacts/$target-" \
    -print_final_stats=1
done
