#include "eval/bandwidth.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/log.h"

namespace slimkv::eval {
namespace {

// Sums 64-bit words 8 lanes at a time; the compiler vectorises it into the widest loads the
// CPU has (one clone per ISA, chosen at load time), and the result is consumed so the loads
// cannot be removed.
__attribute__((target_clones("avx512f", "avx2", "default")))
uint64_t SumWords(const uint64_t* p, size_t n) {
  uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  uint64_t s = 0;
  for (uint64_t a : acc) s += a;
  return s;
}

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool& pool, size_t bytes)
    : pool_(pool), words_(bytes / 8), buf_(words_) {
  pool_.ParallelFor(0, static_cast<int64_t>(words_), 4096, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) buf_[i] = static_cast<uint64_t>(i);
  });
}

double ReadBandwidthProbe::Pass() {
  std::atomic<uint64_t> sink{0};
  const double t0 = NowSeconds();
  pool_.ParallelFor(0, static_cast<int64_t>(words_), 4096, [&](int64_t b, int64_t e, int) {
    sink.fetch_add(SumWords(buf_.data() + b, e - b), std::memory_order_relaxed);
  });
  return static_cast<double>(bytes()) / (NowSeconds() - t0) / 1e9;
}

BandwidthResult MeasureReadBandwidth(ThreadPool& pool, size_t bytes, int reps) {
  ReadBandwidthProbe probe(pool, bytes);
  double best = 0;
  for (int r = 0; r < reps; ++r) best = std::max(best, probe.Pass());
  return {best, probe.bytes(), pool.num_threads()};
}

}  // namespace slimkv::eval
