// Issue 12, finding 6: attention's working memory belongs to the threads that run attention. It used to be a
// `static thread_local` struct (one per SIMD target, 5.7 MB in all), which the C library allocates and clears
// in every thread the process starts: an idle server with ~300 HTTP threads held 1.9 GB. Now KvCache owns one
// AttnScratch per pool thread.
#include <gtest/gtest.h>
#include <link.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "kv/attention.h"

namespace slimkv::kv {
namespace {

// Bytes of static TLS (PT_TLS segments of every loaded object): what each new thread gets.
size_t StaticTlsBytes() {
  size_t total = 0;
  dl_iterate_phdr(
      [](dl_phdr_info *info, size_t, void *data) {
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_TLS) *static_cast<size_t *>(data) += info->dlpi_phdr[i].p_memsz;
        return 0;
      },
      &total);
  return total;
}

long RssKiB() {
  long kib = -1;
  if (FILE *f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f))
      if (std::strncmp(line, "VmRSS:", 6) == 0) kib = std::atol(line + 6);
    std::fclose(f);
  }
  return kib;
}

TEST(AttnScratchTest, NoLargeStaticThreadLocalStorage) {
  // This binary links the attention kernels; before the fix its TLS segment was 5.7 MB.
  EXPECT_LT(StaticTlsBytes(), size_t{64} << 10);
}

TEST(AttnScratchTest, IdleThreadsDoNotPayForAttention) {
  AttnScratch used;  // attention's code and memory are in use in this process
  (void)used;
  constexpr int kThreads = 32;
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  bool release = false;
  const long before = RssKiB();
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      std::unique_lock<std::mutex> lock(mu);
      ++started;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
    });
  }
  long after;
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return started == kThreads; });
    after = RssKiB();
    release = true;
  }
  cv.notify_all();
  for (auto &t : threads) t.join();
  ASSERT_GT(before, 0);
  // A parked thread touches a few pages of its stack; with the old TLS scratch, 5.7 MB.
  EXPECT_LT((after - before) / kThreads, 256) << "KiB of resident memory per idle thread";
}

}  // namespace
}  // namespace slimkv::kv
