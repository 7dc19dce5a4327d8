// A fork-join pool for the forward pass: the calling thread takes part in every job.
//
// One decode step of a small model runs ~150 parallel regions (5 per layer), so a region
// must cost about a microsecond: workers spin on an epoch counter for a while before they
// sleep (std::atomic::wait), and a job is a plain function pointer plus context (no
// std::function, no allocation).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace slimkv {

class ThreadPool {
 public:
  // `num_threads` counts the caller: 1 means "run everything inline".
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(task, thread) for task in [0, num_tasks), spread over the threads; returns when
  // all have finished. Tasks are taken in order from a shared counter, so uneven tasks balance.
  template <typename Fn>
  void Run(int num_tasks, Fn&& fn) {
    auto thunk = [](void* ctx, int task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); };
    RunImpl(num_tasks, thunk, &fn);
  }

  // Splits [begin, end) into one contiguous range per thread (aligned to `grain`) and calls
  // fn(range_begin, range_end, thread). The static split keeps each thread on the same rows
  // of a weight matrix from call to call.
  template <typename Fn>
  void ParallelFor(int64_t begin, int64_t end, int64_t grain, Fn&& fn) {
    const int64_t n = end - begin;
    if (n <= 0) return;
    const int64_t units = (n + grain - 1) / grain;
    const int parts = static_cast<int>(std::min<int64_t>(units, num_threads_));
    Run(parts, [&](int part, int thread) {
      const int64_t u0 = units * part / parts, u1 = units * (part + 1) / parts;
      const int64_t b = begin + u0 * grain, e = std::min(end, begin + u1 * grain);
      if (b < e) fn(b, e, thread);
    });
  }

 private:
  using Thunk = void (*)(void* ctx, int task, int thread);
  void RunImpl(int num_tasks, Thunk thunk, void* ctx);
  void WorkerLoop(int thread);
  void DoTasks(int thread);

  const int num_threads_;
  std::vector<std::thread> workers_;
  // Job description, published by incrementing epoch_.
  Thunk thunk_ = nullptr;
  void* ctx_ = nullptr;
  int num_tasks_ = 0;
  alignas(64) std::atomic<uint64_t> epoch_{0};
  alignas(64) std::atomic<int> next_task_{0};
  alignas(64) std::atomic<int> workers_done_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace slimkv
