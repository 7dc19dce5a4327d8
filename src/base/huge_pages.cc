#include "base/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace slimkv {

bool HugePagesWanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("SLIMKV_HUGE_PAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return wanted;
}

void AdviseHugePages(void* p, size_t bytes) {
  if (!HugePagesWanted() || p == nullptr) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHugePageBytes - 1);
  // Advice only: a kernel without transparent huge pages answers EINVAL, and 4 KiB pages stay.
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace slimkv
