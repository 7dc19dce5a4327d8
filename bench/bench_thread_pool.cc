// What a parallel region of the thread pool costs: a decode step of SmolLM2-135M runs about
// 150 of them (docs/DECISIONS.md "The thread pool").
//   build/bin/bench_thread_pool [--benchmark_filter=...]
// BM_Region: an empty region of `tasks` tasks (the synchronisation alone). BM_Work: a region
// shaped like a decode matmul, 60 units of `unit_ns` nanoseconds of work cut by ParallelFor;
// the time per region beyond "work_ns" (the work divided over the threads) is the overhead.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>

#include "base/thread_pool.h"

namespace {

// Spins for about `ns` nanoseconds (work that touches no shared memory).
void Spin(int64_t ns) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (std::chrono::steady_clock::now() < end) {
  }
}

void BM_Region(benchmark::State& state) {
  slimkv::ThreadPool pool(static_cast<int>(state.range(1)));
  const int tasks = static_cast<int>(state.range(0));
  for (auto _ : state) pool.Run(tasks, [](int, int) {});
}
BENCHMARK(BM_Region)->ArgsProduct({{2, 8}, {2}})->ArgNames({"tasks", "threads"})->UseRealTime();

void BM_Work(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(1));
  slimkv::ThreadPool pool(threads);
  const int64_t unit_ns = state.range(0), units = 60;
  for (auto _ : state)
    pool.ParallelFor(0, units, 1, [&](int64_t b, int64_t e, int) { Spin(unit_ns * (e - b)); });
  state.counters["work_ns"] = static_cast<double>(units * unit_ns / threads);  // time per region at best
}
BENCHMARK(BM_Work)->ArgsProduct({{100, 500}, {2}})->ArgNames({"unit_ns", "threads"})->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
