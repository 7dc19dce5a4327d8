// The cache's side of the lower tiers (tiers/tier_stack.h): a published prefix block is
// spilled as a record of the bytes the pools hold (never re-quantized), and a prefix the
// index lacks is fetched back into the pools block by block, each record checked
// (checksum, fingerprint, key, parent, tokens, shapes) before a byte of it is used. A block
// that fails any check ends the fetched chain there: the caller computes the rest.
// (PrefixCache's methods are split over prefix_cache.cc and this file.)
#include <algorithm>
#include <cstring>

#include "kv/prefix_cache.h"
#include "kv/tiers/block_record.h"
#include "kv/tiers/tier_stack.h"

namespace slimkv::kv {

void PrefixCache::SpillEntry(const PrefixEntry& e) {
  std::vector<tiers::StreamKind> kinds(streams());
  std::vector<const uint8_t*> blocks(streams(), nullptr);
  for (int st = 0; st < streams(); ++st) {
    if (e.blocks[st] == kNoBlock) {
      kinds[st] = tiers::StreamKind::kAbsent;
      continue;
    }
    kinds[st] = e.sealed[st] ? tiers::StreamKind::kSealed : tiers::StreamKind::kStaged;
    blocks[st] = store_->Data(e.sealed[st], e.blocks[st]);
  }
  const tiers::Fingerprint fp = tiers_->For(e.salt);
  tiers::RecordSource src{.header = {.fingerprint = fp,
                                     .key = e.key,
                                     .parent = e.parent,
                                     .n_tokens = static_cast<uint32_t>(e.tokens.size()),
                                     .n_streams = static_cast<uint32_t>(streams()),
                                     .staged_bytes = static_cast<uint32_t>(store_->pool(false).block_bytes()),
                                     .sealed_bytes = sealed_bytes()},
                          .tokens = e.tokens,
                          .kinds = kinds,
                          .blocks = blocks};
  tiers_->Store(fp, e.key, tiers::EncodeRecord(src));
}

bool PrefixCache::LoadEntry(std::span<const uint8_t> bytes, const tiers::Fingerprint& fp, uint64_t key,
                            uint64_t parent, uint64_t salt, std::span<const int32_t> block) {
  auto view = tiers::ParseRecord(bytes, fp, key);
  if (!view.ok()) return false;
  const tiers::RecordHeader& h = view->header();
  // The fingerprint already names the shapes; these checks keep a record that slipped past
  // it (a hash collision of chain keys, a bug) from reaching the pools.
  if (h.parent != parent || h.n_tokens != block.size() || h.n_streams != static_cast<uint32_t>(streams()) ||
      h.staged_bytes != store_->pool(false).block_bytes() || h.sealed_bytes != sealed_bytes()) {
    return false;
  }
  for (size_t i = 0; i < block.size(); ++i)
    if (view->Token(static_cast<int>(i)) != block[i]) return false;
  int n_staged = 0, n_sealed = 0;
  for (int st = 0; st < streams(); ++st) {
    const tiers::StreamKind k = view->Kind(st);
    if (k == tiers::StreamKind::kStaged)
      ++n_staged;
    else if (k == tiers::StreamKind::kSealed && !store_->staged_only())
      ++n_sealed;
    else if (k != tiers::StreamKind::kAbsent)
      return false;
  }
  std::vector<BlockId> staged_ids, sealed_ids;
  if (n_staged > 0 && !AllocateEvicting(false, n_staged, &staged_ids).ok()) return false;
  if (n_sealed > 0 && !AllocateEvicting(true, n_sealed, &sealed_ids).ok()) {
    for (BlockId b : staged_ids) store_->Release(false, b);
    return false;
  }
  PrefixEntry e;
  e.key = key;
  e.parent = parent;
  e.salt = salt;
  e.tokens.assign(block.begin(), block.end());
  e.blocks.assign(streams(), kNoBlock);
  e.sealed.assign(streams(), 0);
  size_t next_staged = 0, next_sealed = 0;
  for (int st = 0; st < streams(); ++st) {
    const tiers::StreamKind k = view->Kind(st);
    if (k == tiers::StreamKind::kAbsent) continue;
    const bool is_sealed = k == tiers::StreamKind::kSealed;
    const BlockId b = is_sealed ? sealed_ids[next_sealed++] : staged_ids[next_staged++];
    std::memcpy(store_->Data(is_sealed, b), view->Block(st), store_->pool(is_sealed).block_bytes());
    e.blocks[st] = b;
    e.sealed[st] = is_sealed;
  }
  if (!index_.Insert(e)) {
    Release(e);
    return false;
  }
  ++stats_.tier_blocks;
  return true;
}

std::span<const int32_t> PrefixCache::Usable(std::span<const int32_t> tokens, int max_tokens) const {
  // At least one token is left to compute (its logits start generation).
  if (tokens.empty()) return tokens;
  return tokens.first(std::min<size_t>(tokens.size() - 1, std::max(0, max_tokens)));
}

bool PrefixCache::FetchPays(size_t missing, size_t n_full, bool count) {
  // The records seen so far; before any, a block of the final format in every stream.
  const size_t block_bytes = sealed_bytes() ? sealed_bytes() : store_->pool(false).block_bytes();
  const int64_t record_bytes = swap_cost_.record_bytes() > 0 ? static_cast<int64_t>(swap_cost_.record_bytes())
                                                             : static_cast<int64_t>(block_bytes) * streams();
  const int64_t blocks = static_cast<int64_t>(n_full - missing);
  return count ? swap_cost_.FetchPays(blocks, record_bytes, bt_) : swap_cost_.WouldFetch(blocks, record_bytes, bt_);
}

tiers::PrefetchId PrefixCache::StartPrefetch(uint64_t salt, std::span<const int32_t> tokens, int max_tokens) {
  if (!tiers_ || tokens.size() <= static_cast<size_t>(bt_)) return 0;
  tokens = Usable(tokens, max_tokens);
  const size_t n_full = tokens.size() / bt_;
  uint64_t parent = PrefixIndex::kRoot;
  std::vector<uint64_t> keys;
  for (size_t b = 0; b < n_full; ++b) {
    const auto block = tokens.subspan(b * bt_, bt_);
    const uint64_t key = PrefixIndex::Key(salt, parent, block);
    if (keys.empty()) {
      if (const PrefixEntry* e = index_.Find(key)) {
        if (e->salt != salt || e->parent != parent || !std::equal(block.begin(), block.end(), e->tokens.begin()))
          return 0;  // a collision in the index: Attach stops here too
        parent = key;
        continue;
      }
      if (!FetchPays(b, n_full, /*count=*/false)) return 0;
    }
    keys.push_back(key);
    parent = key;
  }
  return tiers_->Prefetch(tiers_->For(salt), std::move(keys));
}

void PrefixCache::FetchFromTiers(uint64_t salt, std::span<const int32_t> tokens) {
  const size_t n_full = tokens.size() / bt_;
  const tiers::Fingerprint fp = tiers_->For(salt);
  uint64_t parent = PrefixIndex::kRoot;
  bool decided = false;
  for (size_t b = 0; b < n_full; ++b) {
    const auto block = tokens.subspan(b * bt_, bt_);
    const uint64_t key = PrefixIndex::Key(salt, parent, block);
    if (const PrefixEntry* e = index_.Find(key)) {
      if (e->salt != salt || e->parent != parent ||
          !std::equal(block.begin(), block.end(), e->tokens.begin())) {
        return;  // a collision in the index: Match stops here too
      }
      parent = key;
      continue;
    }
    if (!decided) {
      // The first block RAM lacks: fetch the rest, or leave it all to be computed.
      decided = true;
      if (!FetchPays(b, n_full, /*count=*/true)) return;
    }
    double seconds = 0;
    auto record = tiers_->Load(fp, key, &seconds);
    if (!record) return;
    swap_cost_.ObserveFetch(static_cast<int64_t>(record->size()), seconds);
    if (!LoadEntry(*record, fp, key, parent, salt, block)) {
      tiers_->CountRejected();
      return;
    }
    parent = key;
  }
}

}  // namespace slimkv::kv
