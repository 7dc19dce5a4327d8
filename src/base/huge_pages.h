// Transparent huge pages for the large buffers every decode step streams (the KV pool's
// arena, big weight matrices): one 2 MiB page stands for 512 of 4 KiB in the TLB, so a pass
// over hundreds of MiB walks the page tables 512 times less often, and the prefetches the
// attention issues ahead of its next blocks are not held up by page walks. Linux backs an
// advised region with huge pages when /sys/kernel/mm/transparent_hugepage/enabled is
// `always` or `madvise` (the default of Debian's kernels); with `never` the advice does
// nothing. SLIMKV_HUGE_PAGES=0 in the environment turns it off (for A/B measurements).
#pragma once

#include <cstddef>

namespace slimkv {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Whether AdviseHugePages advises (SLIMKV_HUGE_PAGES is not "0"); read once.
bool HugePagesWanted();
// Asks for huge pages over the whole 2 MiB pages inside [p, p + bytes); before the memory
// is first touched, so that the faults take huge pages.
void AdviseHugePages(void* p, size_t bytes);

}  // namespace slimkv
