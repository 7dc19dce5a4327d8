// Prefix sharing: cached full blocks of past sequences (the prefix index)
// attached to new sequences, published by running ones, and evicted least
// recently used first when the pool needs room. The index holds its own
// reference on every block it names, so a block outlives its sequence until
// evicted, and a sequence dropping its reference (eviction, preemption) never
// frees a block another sequence or the index still holds.
//
// A sequence with an eviction policy attaches a prefix too: its blocks are
// pinned in the sequence's streams (never evicted by its policy, never sealed
// by it) and the policy evicts only among the sequence's own tokens after them.
// Only blocks that still hold their tokens unmodified at their original slots
// (a sequence's "plain" prefix) are published.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/block_store.h"
#include "kv/block_table.h"
#include "kv/prefix_index.h"
#include "kv/spec.h"

namespace slimkv::kv {

// Prefix cache counters.
struct PrefixStats {
  int64_t lookups = 0;        // Attach calls
  int64_t hits = 0;           // calls that reused at least one block
  int64_t lookup_tokens = 0;  // tokens offered to Attach
  int64_t hit_tokens = 0;     // tokens reused
  int64_t cached_blocks = 0;  // index entries (one per block position, all streams)
  int64_t shared_blocks = 0;  // pool blocks with more than one owner (sequences or the index)
  int64_t evicted = 0;        // entries evicted to make room
};

class PrefixCache {
 public:
  PrefixCache(const KvSpec& spec, int block_tokens, BlockStore* store)
      : spec_(spec), bt_(block_tokens), store_(store) {}

  // Gives the empty streams `tables` the longest run of cached full blocks
  // whose tokens, and every token before them, equal a prefix of `tokens`
  // (under the tenant `salt`), at most `max_tokens` tokens and fewer than
  // tokens.size(); on the streams with pin[stream] the blocks are pinned.
  // Returns the tokens attached (a multiple of the block size).
  int Attach(std::vector<BlockTable>& tables, uint64_t salt, std::span<const int32_t> tokens, int max_tokens,
             const std::vector<uint8_t>& pin);
  // Indexes the full blocks of `tokens`, which sit unmodified in slots [0,
  // tokens.size()) of every stream of `tables`.
  void Publish(const std::vector<BlockTable>& tables, uint64_t salt, std::span<const int32_t> tokens);
  // Evicts the least recently used leaf entry; false when the index is empty.
  bool EvictOne();
  void Clear();
  PrefixStats stats() const;
  // fn(sealed, id) for each block reference the index holds.
  template <typename Fn>
  void ForEachBlock(Fn&& fn) const {
    index_.ForEach([&](const PrefixEntry& e) {
      for (size_t st = 0; st < e.blocks.size(); ++st)
        if (e.blocks[st] != kNoBlock) fn(static_cast<bool>(e.sealed[st]), e.blocks[st]);
    });
  }

 private:
  int streams() const { return spec_.n_layers * spec_.n_kv_heads; }
  void Release(const PrefixEntry& e);

  KvSpec spec_;
  int bt_;
  BlockStore* store_;
  PrefixIndex index_;
  PrefixStats stats_;
};

}  // namespace slimkv::kv
