// Memory read bandwidth with 1..N threads: the bound that decode speed is compared with.
//   build/bin/bench_bandwidth [threads] [MiB]
#include <cstdio>
#include <cstdlib>

#include "eval/bandwidth.h"

int main(int argc, char** argv) {
  const int max_threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const size_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
  for (int t = 1; t <= max_threads; ++t) {
    slimkv::ThreadPool pool(t);
    const auto r = slimkv::eval::MeasureReadBandwidth(pool, mib << 20, 5);
    std::printf("threads %d: read %.1f GB/s (%zu MiB buffer, best of 5)\n", t, r.read_gbps, mib);
  }
  return 0;
}
