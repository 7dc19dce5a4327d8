// Where a KV cache's blocks live: a pool of staging blocks (high precision: the
// residual window and the open block) and a pool of sealed blocks (the final
// format), drawing on one byte budget. When nothing is staged (float formats
// without a residual window) there is only the staging pool, holding blocks in
// the final format. Blocks are ids with reference counts; callers name the pool
// by `sealed`.
#pragma once

#include <memory>
#include <vector>

#include "base/status.h"
#include "kv/attention.h"
#include "kv/block_pool.h"
#include "kv/format.h"

namespace slimkv::kv {

inline constexpr BlockId kNoBlock = -1;

class BlockStore {
 public:
  static Result<BlockStore> Create(const KvConfig& config, int head_dim, size_t budget_bytes);
  BlockStore() = default;

  bool staged_only() const { return staged_only_; }
  const BlockKind& kind(bool sealed) const { return sealed && !staged_only_ ? sealed_kind_ : staged_kind_; }
  BlockPool& pool(bool sealed) { return sealed && !staged_only_ ? sealed_ : staged_; }
  const BlockPool& pool(bool sealed) const { return sealed && !staged_only_ ? sealed_ : staged_; }
  uint8_t* Data(bool sealed, BlockId b) { return pool(sealed).Data(b); }
  const uint8_t* Data(bool sealed, BlockId b) const { return pool(sealed).Data(b); }
  void Retain(bool sealed, BlockId b) { pool(sealed).Retain(b); }
  void Release(bool sealed, BlockId b) { pool(sealed).Release(b); }
  int RefCount(bool sealed, BlockId b) const { return pool(sealed).RefCount(b); }
  // Whether `n` more blocks of a pool fit (free ids and budget), without
  // evicting anything.
  bool Fits(bool sealed, int n) const;

  size_t limit() const { return budget_->limit; }
  size_t used() const { return budget_->used; }
  int blocks_in_use() const { return staged_.num_used() + (staged_only_ ? 0 : sealed_.num_used()); }
  int64_t shared_blocks() const;  // blocks with more than one owner
  void CheckInvariants() const;

 private:
  std::unique_ptr<ByteBudget> budget_;  // on the heap: the pools point at it
  bool staged_only_ = true;
  BlockKind staged_kind_, sealed_kind_;
  BlockPool staged_, sealed_;
};

}  // namespace slimkv::kv
