// What the scheduler tells the outside (metrics, the dashboard, benchmarks): a snapshot
// taken at the end of each step, copied out under a lock.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/request.h"
#include "kv/kv_cache.h"
#include "kv/prefix_cache.h"
#include "kv/swap_cost.h"
#include "kv/tiers/tier_stack.h"

namespace slimkv::engine {

// A latency histogram with fixed upper bounds in seconds (Prometheus "le" buckets: each
// count is of observations <= its bound; the last bucket is +Inf).
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
  void Observe(double seconds) {
    size_t b = 0;
    while (b < kBounds.size() && seconds > kBounds[b]) ++b;
    ++counts_[b];
    sum_ += seconds;
    ++count_;
  }
  // Observations <= kBounds[b] (b == kBounds.size(): all of them).
  uint64_t Cumulative(size_t b) const {
    uint64_t c = 0;
    for (size_t i = 0; i <= b && i < counts_.size(); ++i) c += counts_[i];
    return c;
  }
  // The q-quantile, interpolated linearly inside the bucket it falls in (as Prometheus'
  // histogram_quantile does); the largest finite bound when it falls past it.
  double Quantile(double q) const {
    if (count_ == 0) return 0;
    const double rank = q * static_cast<double>(count_);
    uint64_t below = 0;
    for (size_t b = 0; b < kBounds.size(); ++b) {
      const uint64_t in = counts_[b];
      if (in > 0 && static_cast<double>(below + in) >= rank) {
        const double lo = b == 0 ? 0.0 : kBounds[b - 1];
        const double frac =
            std::clamp((rank - static_cast<double>(below)) / static_cast<double>(in), 0.0, 1.0);
        return lo + (kBounds[b] - lo) * frac;
      }
      below += in;
    }
    return kBounds.back();
  }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::array<uint64_t, kBounds.size() + 1> counts_{};
  double sum_ = 0;
  uint64_t count_ = 0;
};

// One running request, for the dashboard's pool picture.
struct SequenceStats {
  RequestId id = 0;
  std::string phase;  // "prefill" or "decode"
  int prompt_tokens = 0;
  int generated_tokens = 0;
  int cached_tokens = 0;  // prompt tokens shared from the prefix cache
  int64_t kv_tokens = 0;  // tokens held in the KV cache
  int64_t kv_blocks = 0;
  size_t kv_bytes = 0;  // bytes of the blocks the sequence holds
};

struct SchedulerStats {
  double time = 0;  // clock seconds of the snapshot
  // Requests.
  int running = 0, waiting = 0;
  int preempted_waiting = 0;  // waiting requests that had been running (recompute)
  uint64_t submitted = 0, finished = 0, cancelled = 0, failed = 0, rejected = 0;
  uint64_t preemptions = 0;
  // Tokens a preempted sequence had computed, by how it got them back when readmitted.
  uint64_t preempted_tokens_swapped = 0;     // re-attached: from the RAM prefix cache or a lower tier
  uint64_t preempted_tokens_recomputed = 0;  // run through the model again
  // Tokens.
  uint64_t prompt_tokens = 0;         // prompt tokens of admitted requests (first admission)
  uint64_t prompt_tokens_cached = 0;  // of those, taken from the prefix cache
  uint64_t computed_tokens = 0;       // tokens run through the model (recomputation included)
  uint64_t generated_tokens = 0;
  double generated_tokens_per_s = 0;  // over the last few seconds
  double computed_tokens_per_s = 0;
  // Prefix cache.
  bool prefix_sharing = false;
  uint64_t prefix_lookups = 0, prefix_hits = 0;  // first admissions, those that reused blocks
  int64_t kv_blocks_shared = 0;                  // pool blocks with more than one owner (sequences, cache)
  int64_t prefix_cache_entries = 0;              // cached block positions (each holds a block per stream)
  int64_t prefix_evictions = 0;
  // KV tiers: the RAM prefix cache's counters (refreshed with the ones above), the lower tiers' (disk,
  // Redis; empty without --kv-disk / --kv-redis) and the swap-or-recompute rule's (kv/swap_cost.h).
  kv::PrefixStats prefix;
  kv::tiers::TierStackStats tier_stack;
  std::vector<std::pair<std::string, kv::tiers::TierStats>> tiers;
  kv::SwapCostStats swap;
  // Eviction (kv/kv_cache.h): what the policy did to the streams (with an eviction policy), and under
  // `:recall` the blocks moved to and from host memory.
  bool evicting = false, recall = false;
  kv::EvictionStats eviction;
  // KV pool.
  size_t kv_budget_bytes = 0, kv_bytes_used = 0;
  int64_t kv_blocks_used = 0, kv_blocks_free = 0;  // free: in blocks of the final format
  size_t kv_block_bytes = 0;                       // a block of the final format
  double kv_bytes_per_token = 0;                   // data + metadata, all layers
  std::string kv_format;
  // Steps.
  uint64_t steps = 0;
  int last_batch_tokens = 0, last_batch_sequences = 0;
  LatencyHistogram ttft, itl, e2e;  // seconds: first token, between tokens, whole request
  // The phases of a request (vLLM's): queue = arrival to its first admission into a step, prefill =
  // admission to the first token (ttft = queue + prefill), decode = first token to the end (any
  // preemption after the first token included), inference = admission to the end (e2e = queue +
  // inference). A request that ends before a phase starts is not counted in it.
  LatencyHistogram queue, prefill, decode, inference;
  std::vector<SequenceStats> sequences;
};

}  // namespace slimkv::engine
