#include "kv/prefix_cache.h"

#include <algorithm>

namespace slimkv::kv {

void PrefixCache::Release(const PrefixEntry& e) {
  for (int st = 0; st < streams(); ++st) {
    if (e.blocks[st] != kNoBlock) store_->Release(e.sealed[st], e.blocks[st]);
  }
}

bool PrefixCache::EvictOne() {
  // The least recently used leaf; evicting it returns memory only if the index
  // was its blocks' last owner, but dropping it also lets its parent become a
  // leaf.
  const PrefixEntry* e = index_.Oldest();
  if (!e) return false;
  Release(*e);
  index_.Erase(e->key);
  ++stats_.evicted;
  return true;
}

Status PrefixCache::AllocateEvicting(bool sealed, int n, std::vector<BlockId>* out) {
  Status st = store_->pool(sealed).Allocate(n, out);
  while (!st.ok() && st.code() == StatusCode::kResourceExhausted && EvictOne()) {
    st = store_->pool(sealed).Allocate(n, out);
  }
  return st;
}

void PrefixCache::Clear() {
  while (EvictOne()) {
  }
}

int PrefixCache::Attach(std::vector<BlockTable>& tables, uint64_t salt, std::span<const int32_t> tokens,
                        int max_tokens, const std::vector<uint8_t>& pin) {
  ++stats_.lookups;
  stats_.lookup_tokens += static_cast<int64_t>(tokens.size());
  if (tokens.size() <= static_cast<size_t>(bt_)) return 0;
  const size_t usable = Usable(tokens, max_tokens).size();
  size_t in_ram = 0;
  if (tiers_) {
    in_ram = index_.Match(salt, tokens.first(usable), bt_).size();
    FetchFromTiers(salt, tokens.first(usable));
  }
  const auto chain = index_.Match(salt, tokens.first(usable), bt_);
  if (!tiers_) in_ram = chain.size();
  stats_.ram_hit_blocks += static_cast<int64_t>(in_ram);
  stats_.ram_miss_blocks += static_cast<int64_t>(usable / bt_ - in_ram);
  int k = static_cast<int>(chain.size());
  // Shorten the match until every stream's blocks can form a valid table:
  // sealed blocks before staged ones (pinned blocks may be either: the sequence
  // reads them as they are), and a window layer's visible blocks all present.
  auto first_needed = [&](int st, int n) {
    const int w = spec_.window(st / spec_.n_kv_heads);
    return w > 0 ? std::max(0, n * bt_ - w + 1) / bt_ : 0;
  };
  auto valid = [&](int n) {
    for (int st = 0; st < streams(); ++st) {
      bool seen_staged = false;
      for (int b = first_needed(st, n); b < n; ++b) {
        if (chain[b]->blocks[st] == kNoBlock) return false;
        if (!chain[b]->sealed[st])
          seen_staged = true;
        else if (seen_staged && !pin[st])
          return false;
      }
    }
    return true;
  };
  while (k > 0 && !valid(k)) --k;
  if (k == 0) return 0;
  for (int st = 0; st < streams(); ++st) {
    BlockTable& t = tables[st];
    const int first = first_needed(st, k);
    for (int b = 0; b < k; ++b) {
      if (b < first) {
        t.Push(kNoBlock, false);
      } else {
        const bool sealed = chain[b]->sealed[st];
        store_->Retain(sealed, chain[b]->blocks[st]);
        t.Push(chain[b]->blocks[st], sealed);
      }
      t.fill.back() = static_cast<int16_t>(bt_);
    }
    t.first_live = first;
    t.slots = k * bt_;
    t.pinned = pin[st] ? k : 0;
  }
  ++stats_.hits;
  stats_.hit_tokens += static_cast<int64_t>(k) * bt_;
  return k * bt_;
}

void PrefixCache::Publish(const std::vector<BlockTable>& tables, uint64_t salt,
                          std::span<const int32_t> tokens) {
  const int n_full = static_cast<int>(tokens.size() / bt_);
  uint64_t parent = PrefixIndex::kRoot;
  for (int b = 0; b < n_full; ++b) {
    const auto block = tokens.subspan(static_cast<size_t>(b) * bt_, bt_);
    const uint64_t key = PrefixIndex::Key(salt, parent, block);
    if (const PrefixEntry* e = index_.Find(key)) {
      if (e->salt != salt || e->parent != parent ||
          !std::equal(block.begin(), block.end(), e->tokens.begin())) {
        return;  // a hash collision with another prefix: stop publishing this
                 // one
      }
      // Published while its blocks were still staged (mid-prompt), now sealed
      // in the tables: the entry takes the sealed blocks, so a chain attaches
      // as sealed blocks before staged ones (Attach's rule) instead of stopping
      // at the first staged one.
      if (UpgradeEntry(key, tables, b) && tiers_) SpillEntry(*index_.Find(key));
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
      const BlockTable& t = tables[st];
      e.blocks[st] = t.ids[b];
      e.sealed[st] = t.sealed[b];
      if (t.ids[b] != kNoBlock) store_->Retain(t.sealed[b], t.ids[b]);
    }
    if (!index_.Insert(e)) {
      Release(e);
      return;
    }
    if (tiers_) SpillEntry(e);
    parent = key;
  }
}

bool PrefixCache::UpgradeEntry(uint64_t key, const std::vector<BlockTable>& tables, int b) {
  if (store_->staged_only()) return false;
  PrefixEntry& e = index_.Mutable(key);
  bool changed = false;
  for (int st = 0; st < streams(); ++st) {
    const BlockTable& t = tables[st];
    if (e.sealed[st] || e.blocks[st] == kNoBlock || t.ids[b] == kNoBlock || !t.sealed[b]) continue;
    store_->Retain(true, t.ids[b]);
    store_->Release(false, e.blocks[st]);
    e.blocks[st] = t.ids[b];
    e.sealed[st] = 1;
    changed = true;
  }
  return changed;
}

PrefixStats PrefixCache::stats() const {
  PrefixStats p = stats_;
  p.cached_blocks = static_cast<int64_t>(index_.size());
  p.shared_blocks = store_->shared_blocks();
  ForEachBlock([&](bool sealed, BlockId) {
    p.bytes_held += static_cast<int64_t>(store_->pool(sealed).block_bytes());
  });
  return p;
}

}  // namespace slimkv::kv
