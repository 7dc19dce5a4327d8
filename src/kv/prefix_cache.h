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
//
// Lower tiers (disk, Redis; tiers/tier_stack.h, prefix_tiers.cc) sit under the
// index: Publish also spills each new entry to them (and an entry again when it
// takes sealed blocks), Attach first fetches the blocks of the prompt the index
// lacks from them, each record checked before a byte of it is used.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/block_store.h"
#include "kv/block_table.h"
#include "kv/prefix_index.h"
#include "kv/spec.h"
#include "kv/swap_cost.h"
#include "kv/tiers/tier_stack.h"

namespace slimkv::kv {
namespace tiers {
class TierStack;
struct Fingerprint;
}  // namespace tiers

// Prefix cache counters.
struct PrefixStats {
  int64_t lookups = 0;        // Attach calls
  int64_t hits = 0;           // calls that reused at least one block
  int64_t lookup_tokens = 0;  // tokens offered to Attach
  int64_t hit_tokens = 0;     // tokens reused
  int64_t cached_blocks = 0;  // index entries (one per block position, all streams)
  int64_t shared_blocks = 0;  // pool blocks with more than one owner (sequences or the index)
  int64_t evicted = 0;        // entries evicted to make room
  int64_t tier_blocks = 0;    // entries fetched from a lower tier (disk, Redis)
  // Per block position of the prompts offered to Attach (full blocks, all streams together):
  int64_t ram_hit_blocks = 0;   // found in the index (RAM)
  int64_t ram_miss_blocks = 0;  // not there: fetched from a tier, or computed
  int64_t bytes_held = 0;       // bytes of the pool blocks the index holds references to
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
  // tokens.size()) of every stream of `tables`. An entry published while its
  // blocks were staged takes the tables' sealed blocks once they are sealed.
  void Publish(const std::vector<BlockTable>& tables, uint64_t salt, std::span<const int32_t> tokens);
  // Starts reading ahead, from the tiers, the blocks of a later Attach(salt, tokens,
  // max_tokens) that RAM lacks, when the swap-cost rule says fetching them pays (the same
  // decision Attach makes). 0 when there is nothing to read; the caller ends a nonzero id
  // with tiers()->EndPrefetch once it has attached (or given up).
  tiers::PrefetchId StartPrefetch(uint64_t salt, std::span<const int32_t> tokens, int max_tokens);
  // Evicts the least recently used leaf entry; false when the index is empty.
  bool EvictOne();
  // Allocates n blocks of a pool, evicting entries if the budget needs it.
  Status AllocateEvicting(bool sealed, int n, std::vector<BlockId>* out);
  // Lower tiers (not owned, outlive the cache; nullptr: none).
  void SetTiers(tiers::TierStack* tiers) { tiers_ = tiers; }
  tiers::TierStack* tiers() const { return tiers_; }
  // Whether a lookup fetches the blocks RAM lacks from the tiers or leaves them to be computed
  // (swap_cost.h); the scheduler feeds it prefill rates.
  SwapCost& swap_cost() { return swap_cost_; }
  const SwapCost& swap_cost() const { return swap_cost_; }
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
  // Bytes of a sealed block (0 when nothing is staged: one pool), as records
  // name them.
  uint32_t sealed_bytes() const {
    return store_->staged_only() ? 0 : static_cast<uint32_t>(store_->pool(true).block_bytes());
  }
  void Release(const PrefixEntry& e);
  // Replaces an entry's staged blocks by block b of the tables where that is
  // sealed; whether anything changed.
  bool UpgradeEntry(uint64_t key, const std::vector<BlockTable>& tables, int b);

  // prefix_tiers.cc. A record of the entry's blocks as the pools hold them.
  void SpillEntry(const PrefixEntry& e);
  // The full blocks of tokens Attach can use (at most max_tokens, fewer than all).
  std::span<const int32_t> Usable(std::span<const int32_t> tokens, int max_tokens) const;
  // Whether the blocks of `tokens` from the first one the index lacks (at index `missing`
  // of n_full) are worth fetching rather than computing; `count`: as a lookup's decision.
  bool FetchPays(size_t missing, size_t n_full, bool count);
  // Extends the index along tokens' full blocks from the tiers, as far as
  // records check, if swap_cost_ says fetching the missing blocks beats computing them.
  void FetchFromTiers(uint64_t salt, std::span<const int32_t> tokens);
  // One record into the pools and the index; false (nothing changed) if any
  // check fails.
  bool LoadEntry(std::span<const uint8_t> bytes, const tiers::Fingerprint& fp, uint64_t key, uint64_t parent,
                 uint64_t salt, std::span<const int32_t> block);

  KvSpec spec_;
  int bt_;
  BlockStore* store_;
  PrefixIndex index_;
  PrefixStats stats_;
  tiers::TierStack* tiers_ = nullptr;
  SwapCost swap_cost_;
};

}  // namespace slimkv::kv
