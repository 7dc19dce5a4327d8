#include "base/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "base/aligned_buffer.h"
#include "kv/block_pool.h"

namespace slimkv {
namespace {

// "always [madvise] never": whether an advised region may take huge pages.
bool KernelOffersHugePages() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return s.find("[always]") != std::string::npos || s.find("[madvise]") != std::string::npos;
}

long VmStat(const std::string& key) {
  std::ifstream in("/proc/vmstat");
  std::string k;
  long v;
  while (in >> k >> v)
    if (k == key) return v;
  return -1;
}

// kB of huge pages backing the mapping that holds p (/proc/self/smaps).
long AnonHugeKbAt(const void* p) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  while (std::getline(in, line)) {
    uintptr_t lo, hi;
    char dash;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = a >= lo && a < hi;
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14));
  }
  return -1;
}

bool Aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kHugePageBytes == 0; }

// Large buffers and the KV arena start on a huge page and, where the kernel offers them
// (unless a fault fell back to small pages), are backed by huge pages once touched; small
// buffers keep the plain alignment.
TEST(HugePagesTest, LargeBuffersAndTheKvArenaTakeHugePages) {
  ASSERT_TRUE(HugePagesWanted()) << "SLIMKV_HUGE_PAGES=0 is set";
  const long fallback = VmStat("thp_fault_fallback");
  AlignedBuffer<uint8_t> big(kHugeBufferBytes + 12345);  // zeroed: every page touched
  EXPECT_TRUE(Aligned(big.data()));
  AlignedBuffer<float> small(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % kAlignment, 0u);

  auto pool = kv::BlockPool::Create(4608, size_t{64} << 20);
  ASSERT_TRUE(pool.ok());
  std::vector<kv::BlockId> ids;
  ASSERT_TRUE(pool->Allocate(2000, &ids).ok());
  EXPECT_TRUE(Aligned(pool->Data(0)));
  for (kv::BlockId b : ids) std::memset(pool->Data(b), 1, pool->block_bytes());

  if (!KernelOffersHugePages()) GTEST_SKIP() << "transparent huge pages are off on this kernel";
  if (VmStat("thp_fault_fallback") != fallback) GTEST_SKIP() << "the kernel fell back to small pages";
  EXPECT_GT(AnonHugeKbAt(big.data()), 0) << "the large buffer is not backed by huge pages";
  EXPECT_GT(AnonHugeKbAt(pool->Data(0)), 0) << "the KV arena is not backed by huge pages";
}

}  // namespace
}  // namespace slimkv
