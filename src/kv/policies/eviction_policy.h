// Eviction policies as objects with hooks (the kinds and options are in
// kv/policy.h).
//
// A policy never touches bytes. The cache calls its hooks with what it observed
// — a key as it is appended, the attention of a step's queries, the queries
// themselves — and the policy keeps what it needs in the stream's TokenStats
// (token_stats.h). When a stream must shrink, the policy scores the tokens the
// cache shows it (a StreamView) and names the tokens it always keeps; the
// selection (select.h) and the cache (kv_evict.cc) turn that into freed blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kv/policies/token_stats.h"
#include "kv/policy.h"

namespace slimkv::kv {

// The tokens of one stream a policy chooses from, in slot order (holes left
// out).
struct StreamView {
  std::span<const int32_t> positions;  // original position of each token
  std::span<const float> mass;         // accumulated attention mass
  std::span<const float> last_mass;    // attention mass of the latest step's newest token
  std::span<const float> score;        // what the policy scored at append
  std::span<const float> keys;         // [n][head_dim] keys as attention sees them, after RoPE and
                                       // unrotated (only for policies that want keys)
  const TokenStats* stats = nullptr;   // the stream's statistics (query moments)
  int head_dim = 0;
  int protect_tail = 0;  // newest tokens that must stay (the step's own)

  int size() const { return static_cast<int>(positions.size()); }
};

class EvictionPolicy {
 public:
  // nullptr for PolicyKind::kNone.
  static std::unique_ptr<EvictionPolicy> Create(const PolicySpec& spec);
  virtual ~EvictionPolicy() = default;
  const PolicySpec& spec() const { return spec_; }

  // What the cache gathers for the policy.
  virtual bool wants_attention() const { return spec_.merge; }  // attention mass (ObserveAttention)
  virtual bool wants_queries() const { return false; }          // query moments (ObserveQueries)
  virtual bool wants_keys() const { return false; }             // StreamView::keys
  // Query tokens at the end of a prompt chunk whose attention is observed (a
  // decode step: its one).
  virtual int observed_tokens() const { return 32; }

  // Hooks. A token's key (after RoPE, unrotated) and value arrive: what to remember in
  // TokenStats::score.
  virtual float OnAppend(const float* key, const float* value, int head_dim) const { return 0.0f; }
  // Whether OnAppend reads the value: then a token whose value merging changed
  // (`:merge`) is scored again.
  virtual bool scores_value() const { return false; }
  // The step's attention over the stream's slots: `weights` summed over the
  // observed query rows, `newest` of the newest token (query heads averaged);
  // both [slots].
  virtual void ObserveAttention(TokenStats& s, std::span<const float> weights,
                                std::span<const float> newest) const;
  // The step's queries of the stream's group (after RoPE): q + token * ldq +
  // head * head_dim.
  virtual void ObserveQueries(TokenStats& s, const float* q, int64_t ldq, int n_tokens, int group,
                              int head_dim) const {}

  // Scores the view's tokens for keeping (higher keeps).
  virtual void Score(const StreamView& v, std::vector<float>* score) const = 0;
  // Marks (keep[i] = 1) the tokens the policy always keeps within `budget`: the
  // step's own tokens, and the policy's fixed parts (sinks, a recent window).
  void MustKeep(const StreamView& v, int budget, std::vector<uint8_t>* keep) const;
  // The first tokens it always keeps (attention sinks), whatever the budget.
  virtual int sinks() const { return 0; }
  // The most recent tokens it always keeps under `budget`.
  virtual int recent(int budget) const;

 protected:
  explicit EvictionPolicy(const PolicySpec& spec) : spec_(spec) {}
  PolicySpec spec_;
};

}  // namespace slimkv::kv
