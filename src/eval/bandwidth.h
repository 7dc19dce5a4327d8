// A memory-bandwidth probe: how fast the machine streams a buffer much larger than the
// caches, with N threads. Decode speed is reported as a fraction of this bound.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/aligned_buffer.h"
#include "base/thread_pool.h"

namespace slimkv::eval {

struct BandwidthResult {
  double read_gbps = 0;  // best of the repetitions, 1e9 bytes per second
  size_t bytes = 0;      // buffer size
  int threads = 0;
};

// One buffer, read again on demand: a benchmark can time a pass between its own rounds, so
// that the bound and the kernels meet the same load (on a shared host the bandwidth a probe
// sees moves by 2-5x within minutes).
class ReadBandwidthProbe {
 public:
  // Allocates `bytes` (rounded down to words) and touches every page from the thread that
  // will read it (first-touch placement).
  ReadBandwidthProbe(ThreadPool& pool, size_t bytes);
  // Reads the whole buffer once with the pool's threads; 1e9 bytes per second.
  double Pass();
  size_t bytes() const { return words_ * 8; }

 private:
  ThreadPool& pool_;
  size_t words_;
  AlignedBuffer<uint64_t> buf_;  // [words_]
};

// Reads a `bytes` buffer `reps` times with the pool's threads (each thread its own slice).
BandwidthResult MeasureReadBandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int reps = 5);

}  // namespace slimkv::eval
