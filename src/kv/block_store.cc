#include "kv/block_store.h"

#include "base/check.h"
#include "kv/footprint.h"

namespace slimkv::kv {

Result<BlockStore> BlockStore::Create(const KvConfig& config, int hd, size_t budget_bytes) {
  BlockStore s;
  s.budget_ = std::make_unique<ByteBudget>();
  s.budget_->limit = budget_bytes;
  s.staged_only_ = !config.needs_staging();
  const int bt = config.block_tokens;
  s.sealed_kind_ = MakeBlockKind(config.k, config.v, bt, hd);
  s.staged_kind_ =
      s.staged_only_ ? s.sealed_kind_ : MakeBlockKind(config.StagingK(), config.StagingV(), bt, hd);
  ASSIGN_OR_RETURN(s.staged_, BlockPool::Create(StagedBlockBytes(config, hd), budget_bytes, s.budget_.get()));
  if (!s.staged_only_) {
    ASSIGN_OR_RETURN(s.sealed_,
                     BlockPool::Create(SealedBlockBytes(config, hd), budget_bytes, s.budget_.get()));
  }
  return s;
}

bool BlockStore::Fits(bool sealed, int n) const {
  const BlockPool& p = pool(sealed);
  return n <= p.num_free() && budget_->used + static_cast<size_t>(n) * p.block_bytes() <= budget_->limit;
}

int64_t BlockStore::shared_blocks() const {
  int64_t n = 0;
  for (int b = 0; b < staged_.capacity(); ++b) n += staged_.RefCount(b) > 1;
  if (!staged_only_)
    for (int b = 0; b < sealed_.capacity(); ++b) n += sealed_.RefCount(b) > 1;
  return n;
}

void BlockStore::CheckInvariants() const {
  staged_.CheckInvariants();
  if (!staged_only_) sealed_.CheckInvariants();
  const size_t pools = staged_.bytes_used() + (staged_only_ ? 0 : sealed_.bytes_used());
  CHECK(budget_->used == pools, "budget says {} bytes used, pools {}", budget_->used, pools);
}

}  // namespace slimkv::kv
