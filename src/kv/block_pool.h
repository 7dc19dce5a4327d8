// A pool of fixed-size KV blocks within a byte budget.
//
// Blocks are integer ids into flat arrays: the bytes live in one arena (reserved virtual
// memory, so untouched blocks cost no RAM), the metadata (reference counts) beside them.
// A block is free (refcount 0, on the free list) or referenced by one or more owners
// (sequences sharing a prefix). Nothing here knows what the bytes mean.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"

namespace slimkv::kv {

using BlockId = int32_t;

// A byte budget several pools draw from (the KV cache's staging and sealed blocks).
struct ByteBudget {
  size_t limit = 0;
  size_t used = 0;
};

class BlockPool {
 public:
  // `block_bytes` is rounded up to 64; the pool holds floor(budget_bytes / block_bytes)
  // blocks. InvalidArgument if that is zero. With `shared`, allocations also count against
  // that budget (which must outlive the pool).
  static Result<BlockPool> Create(size_t block_bytes, size_t budget_bytes, ByteBudget* shared = nullptr);
  BlockPool() = default;  // an empty pool (capacity 0)
  BlockPool(BlockPool&&) noexcept;
  BlockPool& operator=(BlockPool&&) noexcept;
  ~BlockPool();

  // Takes `n` free blocks (refcount 1) or none: ResourceExhausted if fewer than n are free.
  Status Allocate(int n, std::vector<BlockId>* out);
  void Retain(BlockId b);   // one more owner
  void Release(BlockId b);  // one owner fewer; the block is free when none are left

  uint8_t* Data(BlockId b) { return arena_ + static_cast<size_t>(b) * block_bytes_; }
  const uint8_t* Data(BlockId b) const { return arena_ + static_cast<size_t>(b) * block_bytes_; }
  int RefCount(BlockId b) const { return refcount_[b]; }

  size_t block_bytes() const { return block_bytes_; }
  int capacity() const { return static_cast<int>(refcount_.size()); }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return capacity() - num_free(); }
  size_t bytes_budget() const { return block_bytes_ * refcount_.size(); }
  size_t bytes_used() const { return block_bytes_ * num_used(); }

  // CHECKs that the free list and the refcounts agree (tests call it after every operation).
  void CheckInvariants() const;

 private:
  ByteBudget* shared_ = nullptr;
  void* map_ = nullptr;  // the mapping; the arena starts in it on a huge page boundary
  size_t map_bytes_ = 0;
  uint8_t* arena_ = nullptr;
  size_t arena_bytes_ = 0;
  size_t block_bytes_ = 0;
  std::vector<int32_t> refcount_;  // [capacity]
  std::vector<BlockId> free_;      // stack of free ids; low ids are handed out first
};

}  // namespace slimkv::kv
