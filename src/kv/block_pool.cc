#include "kv/block_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/check.h"
#include "base/huge_pages.h"

namespace slimkv::kv {

Result<BlockPool> BlockPool::Create(size_t block_bytes, size_t budget_bytes, ByteBudget* shared) {
  if (block_bytes == 0) return InvalidArgument("KV block size is zero");
  block_bytes = (block_bytes + 63) / 64 * 64;
  const size_t n = budget_bytes / block_bytes;
  if (n == 0) {
    return InvalidArgument("KV budget of {} bytes holds no block of {} bytes", budget_bytes,
                           block_bytes);
  }
  if (n > static_cast<size_t>(INT32_MAX)) {
    return InvalidArgument("KV budget of {} bytes is {} blocks, more than {}", budget_bytes, n,
                           INT32_MAX);
  }
  BlockPool p;
  p.shared_ = shared;
  p.block_bytes_ = block_bytes;
  p.arena_bytes_ = n * block_bytes;
  // The arena starts on a huge page and asks for huge pages (base/huge_pages.h): attention
  // streams every block of a sequence per step, scattered over the arena.
  const bool huge = p.arena_bytes_ >= kHugePageBytes;
  p.map_bytes_ = p.arena_bytes_ + (huge ? kHugePageBytes : 0);
  void* mem = ::mmap(nullptr, p.map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
  if (mem == MAP_FAILED) {
    return ResourceExhausted("cannot reserve {} bytes for the KV pool: {}", p.arena_bytes_,
                             std::strerror(errno));
  }
  p.map_ = mem;
  const uintptr_t start = reinterpret_cast<uintptr_t>(mem);
  p.arena_ = reinterpret_cast<uint8_t*>(huge ? (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1) : start);
  if (huge) AdviseHugePages(p.arena_, p.arena_bytes_);
  p.refcount_.assign(n, 0);
  p.free_.resize(n);
  for (size_t i = 0; i < n; ++i) p.free_[i] = static_cast<BlockId>(n - 1 - i);
  return p;
}

BlockPool::BlockPool(BlockPool&& o) noexcept { *this = std::move(o); }

BlockPool& BlockPool::operator=(BlockPool&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(map_, map_bytes_);
    shared_ = o.shared_;
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    arena_ = std::exchange(o.arena_, nullptr);
    arena_bytes_ = std::exchange(o.arena_bytes_, 0);
    block_bytes_ = o.block_bytes_;
    refcount_ = std::move(o.refcount_);
    free_ = std::move(o.free_);
  }
  return *this;
}

BlockPool::~BlockPool() {
  if (map_) ::munmap(map_, map_bytes_);
}

Status BlockPool::Allocate(int n, std::vector<BlockId>* out) {
  if (n > num_free() || (shared_ && shared_->used + n * block_bytes_ > shared_->limit)) {
    const size_t limit = shared_ ? shared_->limit : bytes_budget();
    const size_t used = shared_ ? shared_->used : bytes_used();
    return ResourceExhausted("KV pool exhausted: need {} more blocks of {} bytes, {} of {} bytes in use (budget)",
                             n, block_bytes_, used, limit);
  }
  if (shared_) shared_->used += n * block_bytes_;
  for (int i = 0; i < n; ++i) {
    const BlockId b = free_.back();
    free_.pop_back();
    DCHECK(refcount_[b] == 0);
    refcount_[b] = 1;
    out->push_back(b);
  }
  return Status::Ok();
}

void BlockPool::Retain(BlockId b) {
  CHECK(b >= 0 && b < capacity() && refcount_[b] > 0, "retain of free or bad block {}", b);
  ++refcount_[b];
}

void BlockPool::Release(BlockId b) {
  CHECK(b >= 0 && b < capacity() && refcount_[b] > 0, "release of free or bad block {}", b);
  if (--refcount_[b] == 0) {
    free_.push_back(b);
    if (shared_) shared_->used -= block_bytes_;
  }
}

void BlockPool::CheckInvariants() const {
  std::vector<char> on_free(refcount_.size(), 0);
  for (BlockId b : free_) {
    CHECK(b >= 0 && b < capacity(), "free list holds bad id {}", b);
    CHECK(!on_free[b], "block {} twice on the free list", b);
    on_free[b] = 1;
    CHECK(refcount_[b] == 0, "free block {} has refcount {}", b, refcount_[b]);
  }
  for (size_t b = 0; b < refcount_.size(); ++b) {
    CHECK(refcount_[b] >= 0, "block {} refcount {}", b, refcount_[b]);
    CHECK(on_free[b] || refcount_[b] > 0, "block {} is neither free nor referenced", b);
  }
}

}  // namespace slimkv::kv
