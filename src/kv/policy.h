// Eviction and merging policies: which cached tokens of a sequence to keep
// within a budget.
//
// This header names the policies and parses their specs; the policies
// themselves are objects with hooks (policies/eviction_policy.h) that see token
// statistics, never codec bytes; the cache turns their choices into freed
// blocks (kv_cache.h). Budgets are in tokens per stream (layer x KV head) of a
// global-attention layer (sliding-window layers keep their window).
//
//   window       the last W tokens                                   (W =
//   budget) sinks        the first S tokens and the last W (StreamingLLM)    (S
//   + W = budget) h2o          heavy hitters by accumulated attention mass +
//   the most recent tokens tova         the tokens the latest queries attend to
//   least are dropped (heads averaged) snapkv       once, at the end of the
//   prompt: attention of the last `obs` prompt tokens,
//                pooled over neighbouring positions, picks the tokens to keep
//                per KV head
//   knorm        tokens with the smallest key norm (they draw the most
//   attention) + recent expected     Expected Attention: keys scored by the
//   attention a Gaussian model of the
//                recent queries expects them to get, exp(mu.k/sqrt(d) + k'Sigma
//                k/(2d))
//   adakv:BASE   head-adaptive budgets on top of a scoring policy: the layer's
//   total budget
//                goes to the heads whose tokens score highest (Ada-KV)
// Options: `pyramid` gives lower layers larger budgets (PyramidKV), `merge`
// folds each evicted token's value into its most similar kept neighbour (by key
// cosine), weighted by attention mass (the value merging of CaM) instead of
// dropping it. `recall` offloads evicted blocks to host memory below the pool
// instead of dropping them, each with a digest of its keys (per-channel min and
// max, Quest), and after every step swaps back the blocks the step's queries
// bound highest for the resident ones they bound lowest (at most `fetch=N` per
// stream and step): what the next step attends is fetched ahead, predicted from
// the last one (ArkVale's recallable eviction). `host=N` bounds host memory to N
// blocks per stream: past it the host block the newest query bounds lowest (the
// one least likely to be fetched) is spilled to the disk tier when there is one
// (--kv-disk; read back asynchronously when a query wants it) and dropped when
// there is none.
//
// window and sinks re-index positions (the kept tokens are attended as if
// contiguous, the sinks right before the window), so generation continues past
// the trained context at constant memory; the others keep the original
// positions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace slimkv::kv {

enum class PolicyKind { kNone, kWindow, kSinks, kH2O, kTova, kSnapKv, kKnorm, kExpected };

struct PolicySpec {
  PolicyKind kind = PolicyKind::kNone;
  int budget = 0;              // tokens kept per stream (per layer x KV head)
  int sinks = 4;               // sinks: first tokens always kept
  double heavy_share = 0.5;    // h2o: share of the budget for heavy hitters (the rest: recent)
  int recent = 0;              // knorm/expected/snapkv: most recent tokens always kept (0: budget/8)
  int obs_window = 32;         // snapkv: observation window (last prompt tokens)
  int pool_kernel = 7;         // snapkv: neighbourhood pooled over
  bool head_adaptive = false;  // adakv
  bool pyramid = false;        // layer-wise budgets
  bool merge = false;          // merge evicted values instead of dropping them
  bool recall = false;         // evicted blocks go to host memory and come back when queries want them
  int fetch = 4;               // recall: blocks a stream may fetch back per step
  int host = 0;                // recall: host blocks a stream keeps in memory at most (0: no bound); past
                               // it the host block the newest query bounds lowest goes to the disk
                               // tier (--kv-disk), or is dropped for good without one

  bool active() const { return kind != PolicyKind::kNone; }
  bool reindexes() const { return kind == PolicyKind::kWindow || kind == PolicyKind::kSinks; }
  // Budget of one layer's streams (pyramid: from 1.5x at the first layer to
  // 0.5x at the last).
  int LayerBudget(int layer, int n_layers) const;
};

// Parses NAME[:OPTION...] (options: merge, pyramid, recall, fetch=N, host=N, sinks=N,
// heavy=F, recent=N, obs=N, pool=N; adakv:BASE). Errors list the policies, and a budget that
// cannot hold what the policy always keeps (sinks + 1, recent + 1) is rejected
// with both numbers.
Result<PolicySpec> ParsePolicy(std::string_view spec, int budget);
std::string PolicyList();
std::string PolicyName(const PolicySpec& p);

}  // namespace slimkv::kv
