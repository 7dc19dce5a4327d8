#include "base/thread_pool.h"

#include "base/check.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define SLIMKV_PAUSE() _mm_pause()
#else
#define SLIMKV_PAUSE() std::this_thread::yield()
#endif

namespace slimkv {
namespace {

constexpr int kTaskBits = 20;
constexpr uint64_t kTaskMask = (uint64_t{1} << kTaskBits) - 1;
constexpr int kMaxTasks = (1 << kTaskBits) - 4096;  // room for late workers' increments

uint64_t EpochOf(uint64_t word) { return word >> (2 * kTaskBits); }
int CountOf(uint64_t word) { return static_cast<int>((word >> kTaskBits) & kTaskMask); }
int NextOf(uint64_t word) { return static_cast<int>(word & kTaskMask); }

// Spin iterations before a worker goes to sleep: long enough to cover the gap between two
// parallel regions of one forward pass, short enough not to burn a core between requests.
constexpr int kSpinIterations = 1 << 14;
// Spin iterations before the caller, waiting for the last tasks, starts yielding its core.
constexpr int kJoinSpinIterations = 1 << 10;

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(num_threads_ - 1);
  for (int t = 1; t < num_threads_; ++t) workers_.emplace_back([this, t] { WorkerLoop(t); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true, std::memory_order_seq_cst);
  job_.fetch_add(uint64_t{1} << (2 * kTaskBits), std::memory_order_seq_cst);  // a new epoch wakes them
  job_.notify_all();
  for (auto& w : workers_) w.join();
}

int ThreadPool::DoTasks(int thread) {
  int ran = 0;
  for (;;) {
    // A worker can be late: its job has finished and the caller has started the next one.
    // The task it takes then belongs to that next job, and it must run it: skipping it would
    // leave the caller waiting forever for a task no one runs. thunk_ and ctx_ are the next
    // job's, written before the job word this fetch_add reads, and the job cannot end before
    // this task does.
    const uint64_t w = job_.fetch_add(1, std::memory_order_acq_rel);
    if (NextOf(w) >= CountOf(w)) break;
    thunk_(ctx_, NextOf(w), thread);
    ++ran;
  }
  // One increment for all the tasks this thread ran (they are all of one job: the job cannot
  // end, and no next one start, before they are counted). The line done_ lives on moves
  // between the cores once per thread and job, not once per task.
  if (ran > 0) done_.fetch_add(ran, std::memory_order_acq_rel);
  return ran;
}

void ThreadPool::RunImpl(int num_tasks, Thunk thunk, void* ctx) {
  if (num_tasks <= 0) return;
  if (num_threads_ == 1 || num_tasks == 1) {
    for (int t = 0; t < num_tasks; ++t) thunk(ctx, t, 0);
    return;
  }
  CHECK(num_tasks <= kMaxTasks, "{} tasks in one job", num_tasks);
  thunk_ = thunk;
  ctx_ = ctx;
  done_.store(0, std::memory_order_relaxed);
  ++epoch_;
  const uint64_t epoch = epoch_ & ((uint64_t{1} << (64 - 2 * kTaskBits)) - 1);
  job_.store((epoch << (2 * kTaskBits)) | (static_cast<uint64_t>(num_tasks) << kTaskBits),
             std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) job_.notify_all();
  DoTasks(0);
  for (int spin = 0; done_.load(std::memory_order_acquire) != num_tasks; ++spin) {
    if (spin < kJoinSpinIterations) {
      SLIMKV_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::WorkerLoop(int thread) {
  uint64_t seen = 0;  // the epoch at construction (not read here: the first job may already be out)
  for (;;) {
    uint64_t w = job_.load(std::memory_order_acquire);
    for (int spin = 0; EpochOf(w) == seen && spin < kSpinIterations; ++spin) {
      SLIMKV_PAUSE();
      w = job_.load(std::memory_order_acquire);
    }
    if (EpochOf(w) == seen) {
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      w = job_.load(std::memory_order_seq_cst);
      if (EpochOf(w) == seen) job_.wait(w, std::memory_order_seq_cst);
      sleepers_.fetch_sub(1, std::memory_order_seq_cst);
      continue;
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = EpochOf(w);
    DoTasks(thread);
  }
}

}  // namespace slimkv
