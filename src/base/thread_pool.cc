#include "base/thread_pool.h"

#include <algorithm>

#include "base/check.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SLIMKV_PAUSE() _mm_pause()
#else
#define SLIMKV_PAUSE() std::this_thread::yield()
#endif

namespace slimkv {
namespace {
// Spin iterations before a worker goes to sleep: long enough to cover the gap between two
// parallel regions of one forward pass, short enough not to burn a core between requests.
constexpr int kSpinIterations = 1 << 14;
// Spin iterations before the caller, waiting for workers, starts yielding its core: on an
// oversubscribed machine the worker it waits for may need that core to finish.
constexpr int kJoinSpinIterations = 1 << 11;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(num_threads_ - 1);
  for (int t = 1; t < num_threads_; ++t) workers_.emplace_back([this, t] { WorkerLoop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_release);
  epoch_.fetch_add(1, std::memory_order_acq_rel);
  epoch_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::DoTasks(int thread) {
  for (;;) {
    const int task = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (task >= num_tasks_) break;
    thunk_(ctx_, task, thread);
  }
}

void ThreadPool::RunImpl(int num_tasks, Thunk thunk, void* ctx) {
  if (num_tasks <= 0) return;
  if (num_threads_ == 1 || num_tasks == 1) {
    for (int t = 0; t < num_tasks; ++t) thunk(ctx, t, 0);
    return;
  }
  thunk_ = thunk;
  ctx_ = ctx;
  num_tasks_ = num_tasks;
  next_task_.store(0, std::memory_order_relaxed);
  workers_done_.store(0, std::memory_order_relaxed);
  epoch_.fetch_add(1, std::memory_order_release);  // publishes the job
  epoch_.notify_all();
  DoTasks(0);
  const int workers = num_threads_ - 1;
  for (int spin = 0; workers_done_.load(std::memory_order_acquire) != workers; ++spin) {
    if (spin < kJoinSpinIterations) {
      SLIMKV_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t e = epoch_.load(std::memory_order_acquire);
    for (int spin = 0; e == seen && spin < kSpinIterations; ++spin) {
      SLIMKV_PAUSE();
      e = epoch_.load(std::memory_order_acquire);
    }
    if (e == seen) {
      epoch_.wait(seen, std::memory_order_acquire);
      continue;
    }
    seen = e;
    if (stop_.load(std::memory_order_acquire)) return;
    DoTasks(thread);
    workers_done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

}  // namespace slimkv
