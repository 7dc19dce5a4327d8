// Swap or recompute: whether the blocks of a prefix that the RAM prefix cache lacks are
// worth fetching from a lower tier (disk, Redis), or cheaper to compute again, decided by
// measured rates: the bytes per second tier fetches delivered (TierStack::Load, misses on
// the way included) against the tokens per second prefill steps ran through the model
// (the scheduler's forward passes that carried prompt chunks).
//
//   fetch     = blocks * bytes_per_block / fetch_bytes_per_s
//   recompute = blocks * tokens_per_block / prefill_tokens_per_s
//
// The tier is consulted when fetch <= recompute. Until both rates are measured it is
// consulted (a fetch is how the read rate gets measured; tiers are meant to be the fast
// path), and after kProbeAfter recompute decisions in a row it is consulted once anyway, so a
// tier that was slow once (a Redis under load, a cold disk) is measured again rather than
// never read for the rest of the process. The rates are exponentially decayed sums (kDecay per observation), so they
// follow a machine whose load changes. A preempted sequence's blocks go through the same
// rule when it is readmitted: the RAM prefix cache (free), then a tier if this says so,
// then recomputation (scheduler.h, Preempt).
#pragma once

#include <cstdint>

namespace slimkv::kv {

struct SwapCostStats {
  int64_t fetch_chosen = 0;         // lookups that went to the tiers
  int64_t recompute_chosen = 0;     // lookups that skipped them: recomputing was measured faster
  int64_t probes = 0;               // fetches chosen only to measure the tier again (in fetch_chosen)
  double fetch_bytes_per_s = 0;     // 0: not measured yet
  double prefill_tokens_per_s = 0;  // 0: not measured yet
};

class SwapCost {
 public:
  static constexpr double kDecay = 0.9;
  static constexpr int kProbeAfter = 32;

  // A fetch that returned `bytes` in `seconds`; a prefill step of `tokens` that took `seconds`.
  // Observations of no time (an injected clock that stands still) are ignored.
  void ObserveFetch(int64_t bytes, double seconds);
  void ObservePrefill(int64_t tokens, double seconds);
  // Whether fetching `blocks` blocks of `bytes_per_block` beats prefilling their
  // `tokens_per_block` tokens each (or the tier is due a probe); counts the decision.
  bool FetchPays(int64_t blocks, int64_t bytes_per_block, int tokens_per_block);
  // The same decision, not counted (a read-ahead asks before the lookup that counts).
  bool WouldFetch(int64_t blocks, int64_t bytes_per_block, int tokens_per_block) const;
  double fetch_bytes_per_s() const { return fetch_s_ > 0 ? fetch_bytes_ / fetch_s_ : 0; }
  double prefill_tokens_per_s() const { return prefill_s_ > 0 ? prefill_tokens_ / prefill_s_ : 0; }
  // Mean bytes of the records fetched (0: none yet). Callers weigh this rather than a block's size in the
  // final format: a record holds its blocks as the pools did, staged ones (fp16) included.
  double record_bytes() const { return fetch_records_ > 0 ? fetch_bytes_ / fetch_records_ : 0; }
  SwapCostStats stats() const;

 private:
  double fetch_bytes_ = 0, fetch_s_ = 0, fetch_records_ = 0;  // decayed sums of fetches
  double prefill_tokens_ = 0, prefill_s_ = 0;                 // decayed sums of prefill steps
  int64_t fetch_chosen_ = 0, recompute_chosen_ = 0, probes_ = 0;
  int recompute_run_ = 0;  // recompute decisions since the last fetch
};

}  // namespace slimkv::kv
