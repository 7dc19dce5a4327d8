// Turning a policy's scores into the tokens a stream keeps.
//
// Two granularities. While a sequence reads its prompt its tokens are still in
// staging blocks, where a token can move without being re-quantized: the policy
// chooses tokens (SelectTokens). Once the prompt has ended, tokens sit in
// sealed blocks whose bytes are written once: the policy chooses whole blocks,
// scored by the mean of their tokens' scores (SelectBlocks), as PagedEviction
// does in its decode phase. A block whose first tokens the policy must keep
// (the attention sinks) may leave only its other tokens: the cache then
// shortens the block, whose bytes stay as they are.
//
// With head-adaptive budgets (Ada-KV) the streams of a layer compete for the
// layer's total: each keeps what its policy always keeps, and the rest goes to
// the highest scores of any head, scores normalised per head so a head with
// larger raw scores does not take everything.
#pragma once

#include <span>
#include <vector>

#include "kv/policies/eviction_policy.h"

namespace slimkv::kv {

// The tokens to keep of one stream (indices into the view, ascending), at most
// `budget`: the step's own tokens, the sinks, the recent window, then the
// highest scores.
void SelectTokens(const EvictionPolicy& p, const StreamView& v, int budget, std::vector<int>* keep);
// The same over the streams of a layer, which share `budget` x views.size()
// tokens.
void SelectTokensAcrossHeads(const EvictionPolicy& p, std::span<const StreamView> views, int budget,
                             std::vector<std::vector<int>>* keeps);

// One block of a stream as the view shows it: tokens [first, first + n) of the
// view.
struct ViewBlock {
  int first = 0, n = 0;
  bool closed = false;  // may leave (a full sealed block, or one the policy
                        // already shortened)
};
// A block that leaves (keep == 0) or is shortened to its first `keep` tokens.
struct BlockCut {
  int view = 0, block = 0, keep = 0;
};
// Chooses blocks to cut, lowest mean score first, while the streams keep at
// least `budget` tokens each (or, across heads, budget x views.size()
// together). Cuts are sorted by view, then block.
void SelectBlocks(const EvictionPolicy& p, std::span<const StreamView> views,
                  std::span<const std::vector<ViewBlock>> blocks, int budget, bool across_heads,
                  std::vector<BlockCut>* cuts);

}  // namespace slimkv::kv
