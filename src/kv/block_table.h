// The blocks of one stream (layer x KV head) of a sequence: which pool block
// holds each run of slots, whether it is sealed, and how many of its slots hold
// tokens.
//
// Slot s lives in block s / bt at offset s % bt. Block b holds tokens in slots [b * bt, b * bt + fill[b]):
// every block is full except the last one (being filled) and a block an eviction shortened (the attention
// sinks' block), whose later slots are holes nobody reads. Blocks before first_live were freed (a
// sliding-window layer's past; their ids are kNoBlock). The first `pinned` blocks came from the prefix cache
// to a sequence with an eviction policy: shared, never evicted or sealed by it. A block's bytes are written
// when its tokens arrive (staging) and once more when it is sealed; evictions only drop or shorten blocks, so
// a sealed token's bytes never change.
//
// Invariants: ids, sealed and fill have one entry per block; slots == (n - 1) *
// bt + fill[n - 1] for n > 0 committed blocks; 0 <= fill[b] <= bt; fill[b] ==
// bt for every b < n - 1 that was not shortened; blocks [first_live, n) are not
// kNoBlock.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kv/block_store.h"

namespace slimkv::kv {

struct BlockTable {
  std::vector<BlockId> ids;     // [block]
  std::vector<uint8_t> sealed;  // [block] 1: a block of the sealed pool (the final format)
  std::vector<int16_t> fill;    // [block] slots holding committed tokens, from the block's start
  int first_live = 0;           // blocks before it are freed
  int pinned = 0;               // leading blocks shared from the prefix cache (policy sequences)
  int slots = 0;                // slot of the next token

  int n_blocks() const { return static_cast<int>(ids.size()); }
  void Push(BlockId id, bool is_sealed) {
    ids.push_back(id);
    sealed.push_back(is_sealed);
    fill.push_back(0);
  }
  // Tokens held by the live blocks from `block` on.
  int HeldFrom(int block) const {
    int n = 0;
    for (int b = std::max(block, first_live); b < n_blocks(); ++b) n += fill[b];
    return n;
  }
  int Held() const { return HeldFrom(0); }
  int SealedBlocks() const {
    int n = 0;
    for (int b = first_live; b < n_blocks(); ++b) n += sealed[b];
    return n;
  }
  // Blocks [first_live, n) hold their slots without holes, sealed ones first
  // (the footprint rule's shape; the n_sealed of StreamBlocks is then
  // first_live + SealedBlocks()).
  bool Dense(int bt) const {
    const int committed = (slots + bt - 1) / bt;  // blocks after these are reserved for a step
    bool staged_seen = false;
    for (int b = first_live; b < n_blocks(); ++b) {
      if (b + 1 < committed && fill[b] != bt) return false;
      if (!sealed[b])
        staged_seen = true;
      else if (staged_seen)
        return false;
    }
    return true;
  }
  void Clear() { *this = BlockTable{}; }
};

}  // namespace slimkv::kv
