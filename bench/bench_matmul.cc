// The matmul kernels at SmolLM2-135M's shapes, for decode (1-4 tokens: the register-dequantizing stream
// kernel) and prefill (64-512 tokens: the panel kernel), against the scalar reference for correctness.
// Reports GB/s of weights and GFLOP/s.
//   build/bin/bench_matmul [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "ops/matmul.h"

namespace {
using slimkv::ops::MatMulOutput;
using slimkv::ops::WeightFormat;
using slimkv::ops::WeightMatrix;

// Random codes; scales and minimums that are fp16 values, held as fp16 as the repacked Q4_1/Q8_0
// matrices of SmolLM2 are.
WeightMatrix Make(WeightFormat f, int64_t rows, int64_t cols) {
  const bool q = f == WeightFormat::kQ4 || f == WeightFormat::kQ8;
  WeightMatrix w = WeightMatrix::Allocate(f, rows, cols, q ? 32 : 0, f == WeightFormat::kQ4);
  std::mt19937 rng(1);
  std::vector<uint8_t> codes(w.code_bytes_per_row());
  const std::vector<float> scales(w.groups_per_row(), 0.01000213623046875f),
      mins(w.groups_per_row(), -0.08001708984375f);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& c : codes) c = static_cast<uint8_t>(rng() & (q ? 0xFF : 0x3F));
    w.SetRow(r, codes.data(), scales.data(), mins.data());
  }
  w.CompactScales();
  return w;
}

void BM_MatMul(benchmark::State& state) {
  const auto f = static_cast<WeightFormat>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  slimkv::ThreadPool pool(threads);
  WeightMatrix w = Make(f, rows, cols);
  std::vector<float> x(tokens * cols), y(tokens * rows), ref(tokens * rows);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.1 * i);
  const MatMulOutput o{&w, y.data(), rows};
  const MatMulOutput r{&w, ref.data(), rows};
  slimkv::ops::MatMul(pool, x.data(), cols, tokens, {&o, 1});
  if (tokens <= 4) {
    slimkv::ops::MatMulReference(x.data(), cols, tokens, {&r, 1});
    for (size_t i = 0; i < y.size(); ++i) {
      if (std::abs(y[i] - ref[i]) > 1e-2 * (1 + std::abs(ref[i]))) {
        state.SkipWithError("kernel disagrees with the reference");
        return;
      }
    }
  }
  for (auto _ : state) {
    slimkv::ops::MatMul(pool, x.data(), cols, tokens, {&o, 1});
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GB/s"] =
      benchmark::Counter(static_cast<double>(w.bytes()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * rows * cols * tokens / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(slimkv::ops::WeightFormatName(f)));
}

void Shapes(benchmark::internal::Benchmark* b) {
  // SmolLM2-135M: fused QKV 960x576, gate+up 3072x576, down 576x1536; output 49152x576.
  for (int threads : {1, 2}) {
    for (int tokens : {1, 4, 8, 16, 32, 64, 70, 512}) {
      b->Args({static_cast<int>(WeightFormat::kQ4), 3072, 576, tokens, threads});
      b->Args({static_cast<int>(WeightFormat::kQ4), 576, 1536, tokens, threads});
      if (tokens <= 64) b->Args({static_cast<int>(WeightFormat::kQ8), 49152, 576, tokens, threads});
    }
    b->Args({static_cast<int>(WeightFormat::kF16), 3072, 576, 1, threads});
    b->Args({static_cast<int>(WeightFormat::kF32), 3072, 576, 1, threads});
  }
  b->ArgNames({"fmt", "rows", "cols", "tokens", "threads"});
  b->UseRealTime();
}
BENCHMARK(BM_MatMul)->Apply(Shapes);

}  // namespace

BENCHMARK_MAIN();
