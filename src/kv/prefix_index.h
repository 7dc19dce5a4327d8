// The prefix index: full blocks of past sequences, keyed by the tokens they hold and every
// token before them, so a new request with a known prefix reuses the blocks instead of
// recomputing them (vLLM's automatic prefix caching, SGLang's RadixAttention).
//
// Keys are chained hashes: key(block i) = SipHash(salt, key(block i-1), tokens of block i),
// stable across processes. Every entry also stores its parent key, salt and tokens, and a
// lookup compares them, so a hash collision can only cost a miss, never a wrong prefix. The
// tenant salt is part of every key: one tenant can never reach another's entries.
//
// The index only knows block ids (one per stream) and holds one reference on each; the
// cache retains/releases them in its pools. Entries whose blocks nobody else uses are
// evicted least-recently-used first, leaves before their parents.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kv/block_pool.h"

namespace slimkv::kv {

struct PrefixEntry {
  uint64_t key = 0, parent = 0, salt = 0;
  std::vector<int32_t> tokens;     // the block's tokens
  std::vector<BlockId> blocks;     // [stream]; -1 where a window layer had freed it
  std::vector<uint8_t> sealed;     // [stream] whether blocks[stream] is a sealed block
  uint64_t last_use = 0;
  int children = 0;
};

class PrefixIndex {
 public:
  static constexpr uint64_t kRoot = 0;

  // Key of the block holding `tokens` after the block keyed `parent`.
  static uint64_t Key(uint64_t salt, uint64_t parent, std::span<const int32_t> tokens);

  // The chain of entries matching tokens[0 : n * block_tokens), as long as it goes.
  std::vector<const PrefixEntry*> Match(uint64_t salt, std::span<const int32_t> tokens, int block_tokens);
  // Adds an entry unless one with the same key exists; returns whether it was added.
  bool Insert(PrefixEntry entry);
  // The least recently used entry without children, or nullptr.
  const PrefixEntry* Oldest() const;
  void Erase(uint64_t key);

  size_t size() const { return entries_.size(); }
  const PrefixEntry* Find(uint64_t key) const;
  PrefixEntry& Mutable(uint64_t key) { return entries_.at(key); }  // an entry that exists
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [k, e] : entries_) fn(e);
  }

 private:
  std::unordered_map<uint64_t, PrefixEntry> entries_;
  uint64_t clock_ = 0;
};

}  // namespace slimkv::kv
