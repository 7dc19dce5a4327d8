// A fork-join pool for the forward pass: the calling thread takes part in every job.
//
// One decode step of a small model runs ~150 parallel regions (5 per layer), so a region
// must cost about a microsecond: a job is a plain function pointer plus context (no
// std::function, no allocation), workers spin for a while before they sleep, and the
// sleeping ones are woken only when there are any.
//
// Tasks are taken from one shared counter, and the caller waits for the tasks to finish,
// not for the workers to check in: on a busy machine, a worker the OS has not scheduled
// yet does not hold up the job, because the caller runs the tasks itself. The job word
// packs (epoch, task count, next task), so one atomic increment gives a worker either a task
// of the current job, which it runs even when it came late from the job before, or a
// number past the end.
#pragma once

#include <algorithm>
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
  // all have finished. `thread` is in [0, num_threads) and unique among concurrent calls.
  template <typename Fn>
  void Run(int num_tasks, Fn&& fn) {
    auto thunk = [](void* ctx, int task, int thread) { (*static_cast<Fn*>(ctx))(task, thread); };
    RunImpl(num_tasks, thunk, &fn);
  }

  // Splits [begin, end) into contiguous ranges aligned to `grain` (a few per thread, so an
  // idle thread can take over a late one's share) and calls fn(range_begin, range_end, thread).
  template <typename Fn>
  void ParallelFor(int64_t begin, int64_t end, int64_t grain, Fn&& fn) {
    const int64_t n = end - begin;
    if (n <= 0) return;
    const int64_t units = (n + grain - 1) / grain;
    const int parts = static_cast<int>(std::min<int64_t>(units, num_threads_ == 1 ? 1 : 4 * num_threads_));
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
  // Takes and runs tasks of the current job until none are left; returns how many ran.
  int DoTasks(int thread);

  const int num_threads_;
  std::vector<std::thread> workers_;
  Thunk thunk_ = nullptr;  // of the current job; stable while any of its tasks is unfinished
  void* ctx_ = nullptr;
  uint64_t epoch_ = 0;     // caller's count of jobs
  // Job word: epoch (bits 40..63) | task count (bits 20..39) | next task (bits 0..19).
  alignas(64) std::atomic<uint64_t> job_{0};
  alignas(64) std::atomic<int> done_{0};      // tasks of the current job finished
  alignas(64) std::atomic<int> sleepers_{0};  // workers blocked in job_.wait
  std::atomic<bool> stop_{false};
};

}  // namespace slimkv
