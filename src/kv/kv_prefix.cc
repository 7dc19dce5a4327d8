// Prefix sharing: attaching cached full blocks to new sequences, publishing them, LRU eviction.
// (KvCache's methods are split over kv_cache.cc, kv_prefix.cc and kv_evict.cc by concern.)
#include <algorithm>
#include <cmath>
#include <limits>

#include "base/check.h"
#include "kv/codec.h"
#include "kv/kv_cache.h"

namespace slimkv::kv {
void KvCache::ReleaseEntry(const PrefixEntry& e) {
  for (int st = 0; st < streams(); ++st) {
    if (e.blocks[st] == kNoBlock) continue;
    (e.sealed[st] ? sealed_pool_ : staged_pool_).Release(e.blocks[st]);
  }
}

bool KvCache::EvictOnePrefix() {
  // The least recently used leaf; evicting it returns memory only if the index was its
  // blocks' last owner, but dropping it also lets its parent become a leaf.
  const PrefixEntry* e = prefix_.Oldest();
  if (!e) return false;
  ReleaseEntry(*e);
  prefix_.Erase(e->key);
  ++prefix_stats_.evicted;
  return true;
}

void KvCache::ClearPrefixCache() {
  while (EvictOnePrefix()) {
  }
}

int KvCache::AttachPrefix(SeqId id, uint64_t salt, std::span<const int32_t> tokens) {
  Sequence& s = Seq(id);
  CHECK(s.length == 0 && s.tables[0].empty(), "AttachPrefix on a sequence that is not empty");
  if (policy_.active()) return 0;  // evicting sequences do not share blocks
  ++prefix_stats_.lookups;
  prefix_stats_.lookup_tokens += static_cast<int64_t>(tokens.size());
  const int bt = config_.block_tokens;
  if (tokens.size() <= static_cast<size_t>(bt)) return 0;
  if (tiers_) FetchFromTiers(salt, tokens.first(tokens.size() - 1));
  // At least one token is left to compute (its logits start generation).
  const auto chain = prefix_.Match(salt, tokens.first(tokens.size() - 1), bt);
  int k = static_cast<int>(chain.size());
  // Shorten the match until every stream's blocks can form a valid table: sealed blocks
  // before staged ones, and a window layer's visible blocks all present.
  auto valid = [&](int n) {
    for (int st = 0; st < streams(); ++st) {
      const int w = spec_.window(st / spec_.n_kv_heads);
      const int first_needed = w > 0 ? std::max(0, n * bt - w + 1) / bt : 0;
      bool seen_staged = false;
      for (int b = first_needed; b < n; ++b) {
        if (chain[b]->blocks[st] == kNoBlock) return false;
        if (!chain[b]->sealed[st]) seen_staged = true;
        else if (seen_staged) return false;
      }
    }
    return true;
  };
  while (k > 0 && !valid(k)) --k;
  if (k == 0) return 0;
  for (int st = 0; st < streams(); ++st) {
    const int w = spec_.window(st / spec_.n_kv_heads);
    const int first_needed = w > 0 ? std::max(0, k * bt - w + 1) / bt : 0;
    auto& table = s.tables[st];
    int sealed = first_needed;
    for (int b = 0; b < k; ++b) {
      if (b < first_needed) {
        table.push_back(kNoBlock);
        continue;
      }
      const BlockId id_b = chain[b]->blocks[st];
      const bool is_sealed = chain[b]->sealed[st];
      (is_sealed ? sealed_pool_ : staged_pool_).Retain(id_b);
      table.push_back(id_b);
      if (is_sealed) sealed = b + 1;
    }
    s.first_live[st] = first_needed;
    s.n_sealed[st] = staged_only() ? first_needed : sealed;
  }
  s.length = k * bt;
  s.attached = true;
  s.next_pos = s.length;
  for (int& n : s.slots) n = s.length;
  ++prefix_stats_.hits;
  prefix_stats_.hit_tokens += s.length;
  return s.length;
}

void KvCache::PublishPrefix(SeqId id, uint64_t salt, std::span<const int32_t> tokens) {
  const Sequence& s = Seq(id);
  if (policy_.active()) return;  // a compacted stream no longer holds a plain prefix
  const int bt = config_.block_tokens;
  const int n_full = static_cast<int>(std::min<int64_t>(tokens.size(), s.length) / bt);
  uint64_t parent = PrefixIndex::kRoot;
  for (int b = 0; b < n_full; ++b) {
    const auto block = tokens.subspan(static_cast<size_t>(b) * bt, bt);
    const uint64_t key = PrefixIndex::Key(salt, parent, block);
    if (const PrefixEntry* e = prefix_.Find(key)) {
      if (e->salt != salt || e->parent != parent || !std::equal(block.begin(), block.end(), e->tokens.begin())) {
        return;  // a hash collision with another prefix: stop publishing this one
      }
      // Published while its blocks were still staged (mid-prompt), now sealed in the
      // sequence: the entry takes the sealed blocks, so a chain attaches as sealed blocks
      // before staged ones (AttachPrefix's rule) instead of stopping at the first staged one.
      if (UpgradeEntry(*e, s, b) && tiers_) SpillEntry(*prefix_.Find(key));
      parent = key;
      continue;
    }
    PrefixEntry e;
    e.key = key;
    e.parent = parent;
    e.salt = salt;
    e.tokens.assign(block.begin(), block.end());
    e.blocks.resize(streams());
    e.sealed.resize(streams());
    for (int st = 0; st < streams(); ++st) {
      const BlockId id_b = s.tables[st][b];
      e.blocks[st] = id_b;
      e.sealed[st] = !staged_only() && b < s.n_sealed[st];
      if (id_b != kNoBlock) (e.sealed[st] ? sealed_pool_ : staged_pool_).Retain(id_b);
    }
    if (!prefix_.Insert(e)) {
      ReleaseEntry(e);
      return;
    }
    if (tiers_) SpillEntry(e);
    parent = key;
  }
}

bool KvCache::UpgradeEntry(const PrefixEntry& entry, const Sequence& s, int b) {
  if (staged_only()) return false;
  PrefixEntry& e = prefix_.Mutable(entry.key);
  bool changed = false;
  for (int st = 0; st < streams(); ++st) {
    const BlockId id_b = s.tables[st][b];
    if (e.sealed[st] || e.blocks[st] == kNoBlock || id_b == kNoBlock || b >= s.n_sealed[st]) continue;
    sealed_pool_.Retain(id_b);
    staged_pool_.Release(e.blocks[st]);
    e.blocks[st] = id_b;
    e.sealed[st] = 1;
    changed = true;
  }
  return changed;
}

PrefixStats KvCache::prefix_stats() const {
  PrefixStats p = prefix_stats_;
  p.cached_blocks = static_cast<int64_t>(prefix_.size());
  p.shared_blocks = 0;
  for (int b = 0; b < staged_pool_.capacity(); ++b) p.shared_blocks += staged_pool_.RefCount(b) > 1;
  if (!staged_only())
    for (int b = 0; b < sealed_pool_.capacity(); ++b) p.shared_blocks += sealed_pool_.RefCount(b) > 1;
  return p;
}

}  // namespace slimkv::kv
