// A memory-bandwidth probe: how fast the machine streams a buffer much larger than the
// caches, with N threads. Decode speed is reported as a fraction of this bound.
#pragma once

#include <cstddef>

#include "base/thread_pool.h"

namespace slimkv::eval {

struct BandwidthResult {
  double read_gbps = 0;  // best of the repetitions, 1e9 bytes per second
  size_t bytes = 0;      // buffer size
  int threads = 0;
};

// Reads a `bytes` buffer `reps` times with the pool's threads (each thread its own slice).
BandwidthResult MeasureReadBandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int reps = 5);

}  // namespace slimkv::eval
