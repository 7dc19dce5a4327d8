// The recall tests' needle (kv/eviction_test.cc, tiers/recall_spill_test.cc): one sequence of a
// small cache whose tokens [kFirst, kFirst + kTokens) have large keys along one random
// direction, so knorm evicts exactly those, and queries along (or against) the direction make
// recall's ranking want (or not want) them back.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kv/kv_cache.h"

namespace slimkv::kv::testing {

class RecallNeedle {
 public:
  static constexpr int kHd = 64, kHeads = 2, kGroup = 2, kLayers = 2;
  static constexpr int kFirst = 64, kTokens = 16;  // the needle's positions

  RecallNeedle(KvCache& cache, SeqId seq) : cache_(cache), seq_(seq), pool_(2), rng_(3), dir_(kHd) {
    for (auto& x : dir_) x = nd_(rng_);
  }

  // n tokens at positions [pos0, pos0 + n): keys, values and queries random; the needle's keys
  // plus twice the direction; with `query` non-zero every query is query x twice the direction.
  void Step(int n, int pos0, int query) {
    const int width = kHeads * kHd, qwidth = kHeads * kGroup * kHd;
    std::vector<float> k(n * width), v(n * width), q(n * qwidth), out(n * qwidth);
    for (auto* x : {&k, &v, &q})
      for (auto& e : *x) e = 0.3f * nd_(rng_);
    for (int i = 0; i < n; ++i) {
      if (IsNeedle(pos0 + i))
        for (int r = 0; r < kHeads; ++r)
          for (int d = 0; d < kHd; ++d) k[(i * kHeads + r) * kHd + d] += 2 * dir_[d];
      if (query != 0)
        for (int r = 0; r < kHeads * kGroup; ++r)
          for (int d = 0; d < kHd; ++d) q[(i * kHeads * kGroup + r) * kHd + d] = 2.0f * query * dir_[d];
    }
    const StepChunk ch[] = {{seq_, n, 0}};
    ASSERT_TRUE(cache_.BeginStep(ch).ok());
    for (int l = 0; l < kLayers; ++l) {
      cache_.Append(l, ch, k.data(), width, v.data(), width);
      cache_.Attend(pool_, l, ch, q.data(), qwidth, out.data(), qwidth, 0.125f);
    }
    cache_.EndStep(ch, &pool_);
    cache_.CheckInvariants();
  }

  // Needle tokens a stream holds.
  int Held(int layer, int head) const {
    const std::vector<int32_t> pos = cache_.HeldPositions(seq_, layer, head);
    return static_cast<int>(std::count_if(pos.begin(), pos.end(), IsNeedle));
  }
  bool AllHold() const {
    for (int l = 0; l < kLayers; ++l)
      for (int h = 0; h < kHeads; ++h)
        if (Held(l, h) != kTokens) return false;
    return true;
  }
  // The needle tokens a stream holds, as stored: position -> key then value.
  std::map<int32_t, std::vector<float>> Tokens(int layer, int head) const {
    const std::vector<int32_t> pos = cache_.HeldPositions(seq_, layer, head);
    const int n = static_cast<int>(pos.size());
    std::vector<float> k(n * kHd), v(n * kHd);
    EXPECT_TRUE(cache_.ReadTokens(seq_, layer, head, 0, n, k.data(), v.data(), true).ok());
    std::map<int32_t, std::vector<float>> m;
    for (int t = 0; t < n; ++t) {
      if (!IsNeedle(pos[t])) continue;
      std::vector<float>& x = m[pos[t]];
      x.assign(k.begin() + t * kHd, k.begin() + (t + 1) * kHd);
      x.insert(x.end(), v.begin() + t * kHd, v.begin() + (t + 1) * kHd);
    }
    return m;
  }
  const std::vector<float>& dir() const { return dir_; }
  static bool IsNeedle(int32_t p) { return p >= kFirst && p < kFirst + kTokens; }

 private:
  KvCache& cache_;
  SeqId seq_;
  ThreadPool pool_;
  std::mt19937 rng_;
  std::normal_distribution<float> nd_;
  std::vector<float> dir_;
};

}  // namespace slimkv::kv::testing
