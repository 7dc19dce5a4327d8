// The matmul over GGUF's own blocks (WeightFormat::kGgml) for every type with a
// kernel, beside the tiled group formats (kQ4, kQ5, kQ8: repacked Q4_0/Q4_1, Q5_0, Q8_0) of the
// same shape in the same run: GB/s of weights and GFLOP/s for decode (1-4
// tokens, the stream kernel) and prefill (64+, panel).
//   build/bin/bench_matmul_ggml [--benchmark_filter=...]
// Shapes: SmolLM2-135M's gate+up (3072 x 576) and a 1B model's (16384 x 2048, Llama-3.2-1B).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "base/thread_pool.h"
#include "gguf/types.h"
#include "ops/matmul.h"

namespace {
using slimkv::gguf::TensorType;
using slimkv::ops::MatMulOutput;
using slimkv::ops::WeightFormat;
using slimkv::ops::WeightMatrix;

// fmt < 0: a tiled group format with fp16 scales, as model/repack.cc makes of
// Q4_1 (-1: kQ4 with minimums), Q8_0 (-2: kQ8), Q5_0 (-3: kQ5, implied minimum -16 d) and Q4_0
// (-4: kQ4, -8 d); else a GGUF type id (kGgml).
WeightMatrix Make(int fmt, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  if (fmt < 0) {
    const WeightFormat f = fmt == -2 ? WeightFormat::kQ8 : fmt == -3 ? WeightFormat::kQ5 : WeightFormat::kQ4;
    WeightMatrix w = WeightMatrix::Allocate(f, rows, cols, 32, fmt == -1);
    w.code_offset = fmt == -3 ? 16 : fmt == -4 ? 8 : 0;
    std::vector<uint8_t> codes(w.code_bytes_per_row());
    const std::vector<float> scales(w.groups_per_row(), 0.01000213623046875f),
        mins(w.groups_per_row(), -0.08001708984375f);  // fp16 values
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& c : codes) c = static_cast<uint8_t>(rng());
      w.SetRow(r, codes.data(), scales.data(), mins.data());
    }
    w.CompactScales();
    return w;
  }
  const auto type = static_cast<TensorType>(fmt);
  WeightMatrix w = WeightMatrix::AllocateGgml(type, rows, cols);
  // Bytes below 0x40 keep every fp16 scale finite and normal-sized; BF16 gets
  // values of order one (subnormal weights would time the CPU's denormal assists, not the kernel).
  for (size_t i = 0; i < w.codes.size(); ++i) {
    w.codes[i] = static_cast<uint8_t>(type == TensorType::kBF16 && i % 2 ? 0x3F : rng() & 0x3F);
  }
  return w;
}

std::string Name(int fmt) {
  if (fmt == -1) return "q4 tiles (Q4_1: fp16 scale+min)";
  if (fmt == -2) return "q8 tiles (Q8_0: fp16 scale)";
  if (fmt == -3) return "q5 tiles (Q5_0: fp16 scale, offset 16)";
  if (fmt == -4) return "q4 tiles (Q4_0: fp16 scale, offset 8)";
  return std::string(slimkv::gguf::TypeName(static_cast<TensorType>(fmt)));
}

void BM_MatMulGgml(benchmark::State& state) {
  const int fmt = static_cast<int>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  slimkv::ThreadPool pool(static_cast<int>(state.range(4)));
  const WeightMatrix w = Make(fmt, rows, cols);
  std::vector<float> x(tokens * cols), y(tokens * rows);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1 * i);
  const MatMulOutput o{&w, y.data(), rows};
  for (auto _ : state) {
    slimkv::ops::MatMul(pool, x.data(), cols, tokens, {&o, 1});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(w.bytes()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * cols * tokens / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["bits/w"] = 8.0 * w.bytes() / (rows * cols);
  state.SetLabel(Name(fmt));
}

void Shapes(benchmark::internal::Benchmark* b) {
  const int types[] = {-1, -2, -3, -4, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23, 30};
  for (auto [rows, cols] : {std::pair{3072, 576}, std::pair{16384, 2048}}) {
    for (int tokens : {1, 4, 64}) {
      for (int t : types) {
        if (t >= 0 && cols % slimkv::gguf::GetTypeTraits(static_cast<TensorType>(t))->block_elems) continue;
        for (int threads : {1, 2}) b->Args({t, rows, cols, tokens, threads});
      }
    }
  }
  b->ArgNames({"fmt", "rows", "cols", "tokens", "threads"});
  b->UseRealTime();
}
BENCHMARK(BM_MatMulGgml)->Apply(Shapes);

}  // namespace

BENCHMARK_MAIN();
