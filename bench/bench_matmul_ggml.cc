// The matmul over every GGUF type with a kernel, in both forms a model can
// hold it: the file's own blocks (WeightFormat::kGgml) and, for the types the
// repacker tiles (model/repack.h: F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K,
// Q5_K, Q6_K), the tiles it makes of the same random blocks, in the same run:
// GB/s of weights and GFLOP/s for decode (1-4 tokens) and prefill (64).
//   build/bin/bench_matmul_ggml [--benchmark_filter=...]
//   form:0 the blocks, form:1 the repacker's tiles.
// Shapes: SmolLM2-135M's gate+up (3072 x 576) and a 1B model's (16384 x 2048, Llama-3.2-1B).
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <vector>

#include "base/half.h"
#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "gguf/types.h"
#include "model/repack.h"
#include "ops/matmul.h"

namespace {
using slimkv::gguf::TensorType;
using slimkv::ops::MatMulOutput;
using slimkv::ops::WeightFormat;
using slimkv::ops::WeightMatrix;

// Random blocks of `type`: bytes below 0x40 keep every fp16 scale finite and
// normal-sized; BF16 gets values of order one (subnormal weights would time
// the CPU's denormal assists, not the kernel). Tiled (form 1) as the repacker
// tiles them, where it does.
WeightMatrix Make(TensorType type, int64_t rows, int64_t cols, bool tiled) {
  std::mt19937 rng(1);
  WeightMatrix blocks = WeightMatrix::AllocateGgml(type, rows, cols);
  for (size_t i = 0; i < blocks.codes.size(); ++i) {
    blocks.codes[i] = static_cast<uint8_t>(type == TensorType::kBF16 && i % 2 ? 0x3F : rng() & 0x3F);
  }
  if (!tiled) return blocks;
  slimkv::gguf::TensorInfo t;
  t.name = "bench";
  t.dims = {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)};
  t.type = type;
  t.n_elements = rows * cols;
  t.n_bytes = blocks.codes.size();
  t.data = blocks.codes.data();
  auto m = slimkv::model::Repack(t);
  return m.ok() ? std::move(*m) : std::move(blocks);
}

void BM_MatMulGgml(benchmark::State& state) {
  const auto type = static_cast<TensorType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  slimkv::ThreadPool pool(static_cast<int>(state.range(4)));
  const WeightMatrix w = Make(type, rows, cols, state.range(5) != 0);
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
  state.SetLabel(std::string(slimkv::gguf::TypeName(type)) + " as " +
                 std::string(slimkv::ops::WeightFormatName(w.format)));
}

void Shapes(benchmark::internal::Benchmark* b) {
  // BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, IQ4_NL, IQ4_XS.
  const int types[] = {30, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 20, 23};
  for (auto [rows, cols] : {std::pair{3072, 576}, std::pair{16384, 2048}}) {
    for (int tokens : {1, 4, 64}) {
      for (int t : types) {
        const auto type = static_cast<TensorType>(t);
        if (cols % slimkv::gguf::GetTypeTraits(type)->block_elems) continue;
        slimkv::gguf::TensorInfo info;
        info.dims = {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)};
        info.type = type;
        const auto plan = slimkv::model::PlanRepack(info);
        const bool tiles = plan.ok() && plan->format != WeightFormat::kGgml;
        for (int form = 0; form <= (tiles ? 1 : 0); ++form) {
          for (int threads : {1, 2}) b->Args({t, rows, cols, tokens, threads, form});
        }
      }
    }
  }
  b->ArgNames({"type", "rows", "cols", "tokens", "threads", "form"});
  b->UseRealTime();
}
BENCHMARK(BM_MatMulGgml)->Apply(Shapes);

}  // namespace

BENCHMARK_MAIN();
