#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace slimkv {
namespace {

TEST(ThreadPoolTest, RunsEveryTaskOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int n : {0, 1, 2, 7, 100}) {
      std::vector<std::atomic<int>> hits(n);
      pool.Run(n, [&](int task, int thread) {
        ASSERT_GE(thread, 0);
        ASSERT_LT(thread, threads);
        hits[task].fetch_add(1);
      });
      for (int i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << i;
    }
  }
}

TEST(ThreadPoolTest, ParallelForCoversTheRangeInGrains) {
  ThreadPool pool(2);
  for (int64_t n : {1, 5, 64, 1000}) {
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(0, n, 8, [&](int64_t b, int64_t e, int) {
      EXPECT_EQ(b % 8, 0);
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  }
}

TEST(ThreadPoolTest, ManyShortRegionsInARow) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int r = 0; r < 20000; ++r) pool.Run(2, [&](int t, int) { sum.fetch_add(t + 1); });
  EXPECT_EQ(sum.load(), 20000 * 3);
}

// More threads than cores makes workers late: one preempted between finishing a task of a
// job and taking the next task wakes up in the following job. It used to take that job's
// first task and drop it, and the caller waited forever (within ~1,000 regions on 2 cores).
TEST(ThreadPoolTest, LateWorkerRunsTheTaskItTakesFromTheNextJob) {
  const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency())) + 1;
  ThreadPool pool(threads);
  constexpr int64_t kRegions = 100000;
  std::atomic<int64_t> regions{0};
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    int64_t last = -1;
    for (int tick = 1; !finished.load(); ++tick) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (tick % 100 != 0) continue;  // every 10 s: has a region finished since the last look?
      const int64_t now = regions.load();
      if (now == last && !finished.load()) {
        std::fprintf(stderr, "thread pool hung after %lld regions\n", static_cast<long long>(now));
        std::abort();  // the pool cannot be unstuck; a hang would only end at the ctest timeout
      }
      last = now;
    }
  });
  std::atomic<int64_t> sum{0};
  for (int64_t r = 0; r < kRegions; ++r) {
    pool.Run(4, [&](int t, int) { sum.fetch_add(t + 1, std::memory_order_relaxed); });
    regions.store(r + 1);
  }
  finished.store(true);
  watchdog.join();
  EXPECT_EQ(sum.load(), kRegions * 10);
}

}  // namespace
}  // namespace slimkv
