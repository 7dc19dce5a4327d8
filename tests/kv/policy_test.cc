// Eviction policies on their own: parsing, what each keeps at token and at
// block level, and the value-merging math. The cache side (compaction by
// reference, positions, quantized formats) is in eviction_test.cc.
#include "kv/policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "kv/policies/eviction_policy.h"
#include "kv/policies/merge.h"
#include "kv/policies/recall.h"
#include "kv/policies/select.h"

namespace slimkv::kv {
namespace {

StreamView View(const std::vector<int32_t>& pos, const std::vector<float>& mass,
                const std::vector<float>& score) {
  StreamView v;
  v.positions = pos;
  v.mass = mass;
  v.last_mass = mass;
  v.score = score;
  v.protect_tail = 1;
  return v;
}

std::vector<int> Keep(const char* policy, int budget, const StreamView& v) {
  auto p = EvictionPolicy::Create(*ParsePolicy(policy, budget));
  std::vector<int> keep;
  SelectTokens(*p, v, budget, &keep);
  return keep;
}

TEST(PolicyTest, BadSpecsAreClearErrors) {
  EXPECT_NE(ParsePolicy("lru", 100).status().message().find("sinks"), std::string::npos);
  EXPECT_NE(ParsePolicy("sinks", 0).status().message().find("--kv-budget"), std::string::npos);
  const auto small = ParsePolicy("sinks:sinks=8", 8);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("8"), std::string::npos);
  EXPECT_FALSE(ParsePolicy("h2o:heavy=2", 100).ok());
  EXPECT_FALSE(ParsePolicy("snapkv:pool=4", 100).ok());
  EXPECT_FALSE(ParsePolicy("adakv", 100).ok());
  EXPECT_FALSE(ParsePolicy("adakv:sinks", 100).ok());
  EXPECT_FALSE(ParsePolicy("knorm:frobnicate", 100).ok());
  EXPECT_FALSE(ParsePolicy("knorm:recent=200", 100).ok());
  const auto ok = ParsePolicy("adakv:snapkv:merge:pyramid", 64);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->head_adaptive && ok->merge && ok->pyramid);
  EXPECT_EQ(PolicyName(*ok), "adakv:snapkv:pyramid:merge");
  EXPECT_EQ(EvictionPolicy::Create(*ParsePolicy("none", 0)), nullptr);
  // Recall needs original positions and no merging.
  const auto recall = ParsePolicy("h2o:recall:fetch=8", 64);
  ASSERT_TRUE(recall.ok()) << recall.status().ToString();
  EXPECT_TRUE(recall->recall);
  EXPECT_EQ(recall->fetch, 8);
  EXPECT_EQ(PolicyName(*recall), "h2o:recall:fetch=8");
  EXPECT_EQ(PolicyName(*ParsePolicy("snapkv:recall", 64)), "snapkv:recall");
  EXPECT_FALSE(ParsePolicy("sinks:recall", 64).ok());
  EXPECT_FALSE(ParsePolicy("window:recall", 64).ok());
  EXPECT_FALSE(ParsePolicy("h2o:merge:recall", 64).ok());
  EXPECT_FALSE(ParsePolicy("h2o:recall:fetch=0", 64).ok());
  // host=N bounds recall's host blocks per stream; fetch= and host= need :recall.
  const auto host = ParsePolicy("h2o:recall:host=16", 64);
  ASSERT_TRUE(host.ok()) << host.status().ToString();
  EXPECT_EQ(host->host, 16);
  EXPECT_EQ(PolicyName(*host), "h2o:recall:host=16");
  EXPECT_EQ(PolicyName(*ParsePolicy(PolicyName(*host), 64)), "h2o:recall:host=16");
  EXPECT_FALSE(ParsePolicy("h2o:recall:host=0", 64).ok());
  EXPECT_FALSE(ParsePolicy("h2o:host=16", 64).ok());
  EXPECT_FALSE(ParsePolicy("h2o:fetch=2", 64).ok());
  EXPECT_FALSE(ParsePolicy("h2o:fetch=4", 64).ok());  // the default value written out, too
}

TEST(PolicyTest, EachPolicyKeepsWhatItPromises) {
  const int n = 100, budget = 20;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> mass(n, 0.01f), score(n, 0.0f);
  mass[10] = mass[40] = mass[41] = 5;  // heavy hitters
  score[7] = 9;                        // the smallest key norm
  const StreamView v = View(pos, mass, score);
  std::vector<int> keep = Keep("window", budget, v);
  EXPECT_EQ(keep.front(), 80);
  EXPECT_EQ(keep.size(), 20u);
  keep = Keep("sinks:sinks=4", budget, v);
  EXPECT_EQ(keep[0], 0);
  EXPECT_EQ(keep[3], 3);
  EXPECT_EQ(keep[4], 84);
  keep = Keep("h2o", budget, v);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 10) && std::count(keep.begin(), keep.end(), 40));
  EXPECT_EQ(keep.back(), 99);
  EXPECT_EQ(keep.size(), 20u);
  keep = Keep("knorm", budget, v);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 7));
  // SnapKV pools: the neighbours of a heavy token come along.
  keep = Keep("snapkv:pool=3", budget, v);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 9) && std::count(keep.begin(), keep.end(), 11));
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  // Pyramid: lower layers get more, the total stays.
  const PolicySpec p = *ParsePolicy("h2o:pyramid", 100);
  EXPECT_GT(p.LayerBudget(0, 10), p.LayerBudget(9, 10));
  int total = 0;
  for (int l = 0; l < 10; ++l) total += p.LayerBudget(l, 10);
  EXPECT_NEAR(total, 1000, 10);
}

// Expected Attention keeps the first tokens (the attention sink) even when the query moments
// expect nothing of them: the sink's mass is not in any moment of the queries, and evicting it
// cost SmolLM2 +66 % perplexity at a quarter of 1K tokens.
TEST(PolicyTest, ExpectedKeepsTheSinksWhateverTheQueriesExpect) {
  const int n = 64, hd = 4, budget = 16;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> none(n, 0.0f), keys(static_cast<size_t>(n) * hd, 0.0f);
  for (int t = 0; t < n; ++t)
    keys[static_cast<size_t>(t) * hd] = t < 4 ? -3.0f : 1.0f;  // the first 4: against the mean query
  TokenStats stats;
  stats.q_mean = {1, 0, 0, 0};
  stats.q_sq = {1, 0, 0, 0};
  stats.q_count = 32;
  const std::vector<float> vnorm(n, 1.0f);
  StreamView v = View(pos, none, vnorm);
  v.keys = keys;
  v.stats = &stats;
  v.head_dim = hd;
  const std::vector<int> keep = Keep("expected", budget, v);
  ASSERT_EQ(keep.size(), static_cast<size_t>(budget));
  for (int t = 0; t < 4; ++t) EXPECT_EQ(keep[t], t);
  EXPECT_EQ(keep.back(), n - 1);
  // With the sinks option at 0 they go: the score alone decides.
  const std::vector<int> plain = Keep("expected:sinks=0", budget, v);
  EXPECT_EQ(std::count_if(plain.begin(), plain.end(), [](int t) { return t < 4; }), 0);
}

// Expected Attention scores each query head by its own moments: a head that looks at a few
// tokens keeps them, though another head of the group attends elsewhere more strongly.
// Averaging the heads' moments first (the first build did) makes a mean query that points
// where the strong head looks and keeps only those tokens. A token's score also scales with
// its value's norm.
TEST(PolicyTest, ExpectedScoresEachQueryHeadByItsOwnMoments) {
  const int n = 64, hd = 2, budget = 16;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> none(n, 0.0f), vnorm(n, 1.0f), keys(static_cast<size_t>(n) * hd, 0.0f);
  for (int t = 0; t < n; ++t) keys[static_cast<size_t>(t) * hd + 1] = 1.0f;  // where head 1 looks
  for (int t = 10; t < 15; ++t)
    keys[static_cast<size_t>(t) * hd] = 1.0f, keys[t * hd + 1] = 0.0f;  // head 0's
  TokenStats stats;
  stats.q_mean = {4, 0, 0, 20};  // [head][dim], no variance
  stats.q_sq = {16, 0, 0, 400};
  stats.q_count = 64;
  StreamView v = View(pos, none, vnorm);
  v.keys = keys;
  v.stats = &stats;
  v.head_dim = hd;
  const std::vector<int> keep = Keep("expected:sinks=0:recent=1", budget, v);
  for (int t = 10; t < 15; ++t) EXPECT_TRUE(std::count(keep.begin(), keep.end(), t)) << "token " << t;
  // Equal keys: the larger values stay.
  std::vector<float> flat(static_cast<size_t>(n) * hd, 1.0f);
  for (int t = 0; t < n; ++t) vnorm[t] = t >= 40 && t < 50 ? 5.0f : 1.0f;
  v.keys = flat;
  v.score = vnorm;
  const std::vector<int> big = Keep("expected:sinks=0:recent=1", budget, v);
  for (int t = 40; t < 50; ++t) EXPECT_TRUE(std::count(big.begin(), big.end(), t)) << "token " << t;
}

// The scores against the formula written out: the softmax over tokens of each head's expected
// logit c mean.k + c^2/2 sum var k^2, averaged over the heads, times |v|.
TEST(PolicyTest, ExpectedScoresMatchTheFormula) {
  const int n = 50, hd = 8, group = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> none(n, 0.0f), vnorm(n), keys(static_cast<size_t>(n) * hd);
  for (float& x : keys) x = 2 * nd(rng);
  for (float& x : vnorm) x = 0.5f + std::abs(nd(rng));
  TokenStats stats;
  for (int j = 0; j < group * hd; ++j) {
    const float m = nd(rng), var = std::abs(nd(rng));
    stats.q_mean.push_back(m);
    stats.q_sq.push_back(var + m * m);
  }
  stats.q_count = 100;
  StreamView v = View(pos, none, vnorm);
  v.keys = keys;
  v.stats = &stats;
  v.head_dim = hd;
  std::vector<float> got;
  EvictionPolicy::Create(*ParsePolicy("expected", 16))->Score(v, &got);
  ASSERT_EQ(got.size(), static_cast<size_t>(n));
  std::vector<double> want(n, 0.0);
  const double c = 1 / std::sqrt(double{hd});
  for (int g = 0; g < group; ++g) {
    std::vector<double> e(n);
    double sum = 0;
    for (int t = 0; t < n; ++t) {
      double z = 0;
      for (int d = 0; d < hd; ++d) {
        const double m = stats.q_mean[g * hd + d], var = stats.q_sq[g * hd + d] - m * m, k = keys[t * hd + d];
        z += c * m * k + c * c / 2 * var * k * k;
      }
      sum += e[t] = std::exp(z);
    }
    for (int t = 0; t < n; ++t) want[t] += e[t] / sum / group;
  }
  for (int t = 0; t < n; ++t) EXPECT_NEAR(got[t], want[t] * vnorm[t], 1e-5 * want[t] * vnorm[t] + 1e-9) << t;
}

// After the prompt a policy chooses whole blocks: the lowest mean score leaves
// first, what the policy must keep never leaves, and the sinks' block is only
// shortened.
TEST(PolicyTest, BlockLevelChoosesWholeBlocksAndShortensTheSinksBlock) {
  const int n = 80,
            bt = 16;  // blocks of 16: [0,16) [16,32) [32,48) [48,64) [64,80)
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> mass(n, 1.0f), score(n, 0.0f);
  for (int i = 16; i < 32; ++i) mass[i] = 0.1f;  // the lightest block
  mass[40] = 50;                                 // one heavy token makes [32,48) the heaviest
  std::vector<ViewBlock> blocks;
  for (int b = 0; b < 5; ++b) blocks.push_back({b * bt, bt, b < 4});
  const StreamView v = View(pos, mass, score);
  std::vector<BlockCut> cuts;
  auto h2o = EvictionPolicy::Create(*ParsePolicy("h2o:heavy=0.75", 48));
  SelectBlocks(*h2o, {&v, 1}, {&blocks, 1}, 48, false, &cuts);
  // 80 tokens, budget 48: two blocks leave; the recent 12 keep the open block;
  // [32,48) stays.
  ASSERT_EQ(cuts.size(), 2u);
  EXPECT_EQ(cuts[0].block, 0);
  EXPECT_EQ(cuts[1].block, 1);
  EXPECT_EQ(cuts[0].keep + cuts[1].keep, 0);
  auto sinks = EvictionPolicy::Create(*ParsePolicy("sinks:sinks=4", 48));
  SelectBlocks(*sinks, {&v, 1}, {&blocks, 1}, 48, false, &cuts);
  // The oldest tokens after the sinks leave: block 0 keeps its 4 sinks, block 1
  // goes.
  ASSERT_EQ(cuts.size(), 2u);
  EXPECT_EQ(cuts[0].block, 0);
  EXPECT_EQ(cuts[0].keep, 4);
  EXPECT_EQ(cuts[1].block, 1);
  EXPECT_EQ(cuts[1].keep, 0);
}

// Head-adaptive selection gives heads unequal shares of the layer's budget: a
// head whose scores are concentrated keeps few tokens, a flat one many.
TEST(PolicyTest, AdaKvGivesHeadsUnequalBudgets) {
  const int n = 64, budget = 16;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> peaked(n, 0.001f), flat(n, 1.0f), none(n, 0.0f);
  for (int i = 0; i < 4; ++i) peaked[i * 10] = 10;
  const StreamView views[] = {View(pos, peaked, none), View(pos, flat, none)};
  auto p = EvictionPolicy::Create(*ParsePolicy("adakv:h2o:heavy=1", budget));
  std::vector<std::vector<int>> keeps;
  SelectTokensAcrossHeads(*p, views, budget, &keeps);
  EXPECT_EQ(keeps[0].size() + keeps[1].size(), 2u * budget);
  EXPECT_LT(keeps[0].size(), keeps[1].size());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(std::count(keeps[0].begin(), keeps[0].end(), i * 10));
}

// CaM-style merging: an evicted value folds into the kept token with the most
// similar key, weighted by attention mass; masses add up; tokens that may not
// receive are skipped.
TEST(PolicyTest, MergeMath) {
  const int hd = 2;
  // Keys: token 0 along x, token 1 along y, token 2 near x (evicted), token 3
  // near y (evicted).
  const std::vector<float> keys = {1, 0, 0, 1, 0.9f, 0.1f, 0.2f, 0.8f};
  std::vector<float> values = {1, 1, 2, 2, 4, 0, 0, 8};
  std::vector<float> mass = {3, 1, 1, 3};
  const std::vector<uint8_t> keep = {1, 1, 0, 0}, receives = {1, 1, 0, 0};
  const std::vector<int> changed = MergeEvicted(hd, keys, values, mass, keep, receives);
  EXPECT_EQ(changed, (std::vector<int>{0, 1}));
  // v0 = (3 * (1, 1) + 1 * (4, 0)) / 4; v1 = (1 * (2, 2) + 3 * (0, 8)) / 4.
  EXPECT_FLOAT_EQ(values[0], 7.0f / 4);
  EXPECT_FLOAT_EQ(values[1], 3.0f / 4);
  EXPECT_FLOAT_EQ(values[2], 2.0f / 4);
  EXPECT_FLOAT_EQ(values[3], 26.0f / 4);
  EXPECT_FLOAT_EQ(mass[0], 4);
  EXPECT_FLOAT_EQ(mass[1], 4);
  // Token 1 may not receive: token 3 goes to token 0, its best allowed match.
  values = {1, 1, 2, 2, 4, 0, 0, 8};
  mass = {3, 1, 1, 3};
  const std::vector<uint8_t> only0 = {1, 0, 0, 0};
  EXPECT_EQ(MergeEvicted(hd, keys, values, mass, keep, only0), (std::vector<int>{0}));
  EXPECT_FLOAT_EQ(mass[0], 7);
  EXPECT_FLOAT_EQ(values[2], 2);  // token 1 untouched
  // Weighted twice in sequence: (3 (1,1) + 1 (4,0)) / 4, then with token 3's
  // (0, 8) at 3 of 7.
  EXPECT_FLOAT_EQ(values[0], (4 * (7.0f / 4) + 3 * 0) / 7);
  EXPECT_FLOAT_EQ(values[1], (4 * (3.0f / 4) + 3 * 8) / 7);
}

// Recall's digest bounds every score of its block from above and is exact for one token.
TEST(PolicyTest, RecallDigestBoundsTheBlocksScores) {
  for (int hd : {64, 68, 256}) {
    constexpr int group = 3;
    std::mt19937 rng(5);
    std::normal_distribution<float> nd;
    for (int n : {1, 5, 16}) {
      std::vector<float> keys(n * hd), q(group * hd), lohi(2 * hd);
      for (int trial = 0; trial < 50; ++trial) {
        for (auto& x : keys) x = nd(rng) * 2;
        for (auto& x : q) x = nd(rng);
        KeyDigest(keys.data(), n, hd, lohi.data());
        float best = -1e30f;
        for (int g = 0; g < group; ++g) {
          for (int t = 0; t < n; ++t) {
            float dot = 0;
            for (int c = 0; c < hd; ++c) dot += q[g * hd + c] * keys[t * hd + c];
            best = std::max(best, dot);
          }
        }
        const float bound = DigestBound(q.data(), group, hd, lohi.data());
        // The vectorized float sum against the double-precision reference: the rounding of
        // head_dim float additions, each within 2^-24 of sums a few times |ref|.
        const float ref = DigestBoundReference(q.data(), group, hd, lohi.data());
        EXPECT_NEAR(bound, ref, 1e-5f * hd * (1 + std::fabs(ref)));
        EXPECT_GE(ref, best - 1e-4f * (1 + std::fabs(best)));
        if (n == 1) {
          EXPECT_NEAR(ref, best, 1e-4f * (1 + std::fabs(best)));
        }
      }
    }
  }
}

// A held block leaves for a wanted host block only when the query bounds it lower, and
// among those the policy's least valued one goes, not the one the bound ranks lowest.
TEST(PolicyTest, RecallSwapsOutWhatThePolicyValuesLeast) {
  // Held blocks 0..3 (bound, value), then the wanted host blocks' bounds, best first.
  const std::vector<float> value = {0.1f, 9.0f, 5.0f, 4.0f};
  const std::vector<float> bound = {5.0f, 1.0f, 3.0f, 2.0f, /*wanted*/ 4.0f, 2.5f, 0.5f};
  // Block 0 is valued least but bounded above every wanted block: it stays. For 4.0, block 3
  // (value 4) goes; for 2.5, block 2 is bounded above it (3.0) and block 1 (value 9) below it;
  // 0.5 bounds no held block higher: nothing more leaves.
  EXPECT_EQ(ChooseVictims(bound, value, 4, 3), (std::vector<int>{3, 1}));
  EXPECT_EQ(ChooseVictims(bound, value, 1, 3), (std::vector<int>{3}));  // `fetch` caps the swaps
  EXPECT_EQ(ChooseVictims(bound, value, 4, 0), (std::vector<int>{}));
  // Equal values keep the held order; equal bounds do not swap.
  EXPECT_EQ(ChooseVictims(std::vector<float>{1, 1, 2}, std::vector<float>{3, 3}, 4, 1), (std::vector<int>{0}));
  EXPECT_EQ(ChooseVictims(std::vector<float>{2, 2, 2}, std::vector<float>{3, 3}, 4, 1), (std::vector<int>{}));
}

}  // namespace
}  // namespace slimkv::kv
