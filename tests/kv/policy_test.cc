// Eviction policies: what each keeps, bad specs, and the cache's compaction keeping memory
// within budget, blocks referenced and attention exact over the kept tokens.
#include "kv/policy.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "kv/kv_cache.h"

namespace slimkv::kv {
namespace {

StreamView View(const std::vector<int32_t>& pos, const std::vector<float>& mass, const std::vector<float>& score) {
  StreamView v;
  v.positions = pos;
  v.mass = mass;
  v.last_mass = mass;
  v.score = score;
  v.protect_tail = 1;
  return v;
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
}

TEST(PolicyTest, EachPolicyKeepsWhatItPromises) {
  const int n = 100, budget = 20;
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<float> mass(n, 0.01f), score(n, 0.0f);
  mass[10] = mass[40] = mass[41] = 5;  // heavy hitters
  score[7] = 9;                        // the smallest key norm
  std::vector<int> keep;
  Select(*ParsePolicy("window", budget), View(pos, mass, score), budget, &keep);
  EXPECT_EQ(keep.front(), 80);
  EXPECT_EQ(keep.size(), 20u);
  Select(*ParsePolicy("sinks:sinks=4", budget), View(pos, mass, score), budget, &keep);
  EXPECT_EQ(keep[0], 0);
  EXPECT_EQ(keep[3], 3);
  EXPECT_EQ(keep[4], 84);
  Select(*ParsePolicy("h2o", budget), View(pos, mass, score), budget, &keep);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 10) && std::count(keep.begin(), keep.end(), 40));
  EXPECT_EQ(keep.back(), 99);
  EXPECT_EQ(keep.size(), 20u);
  Select(*ParsePolicy("knorm", budget), View(pos, mass, score), budget, &keep);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 7));
  // SnapKV pools: the neighbours of a heavy token come along.
  Select(*ParsePolicy("snapkv:pool=3", budget), View(pos, mass, score), budget, &keep);
  EXPECT_TRUE(std::count(keep.begin(), keep.end(), 9) && std::count(keep.begin(), keep.end(), 11));
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  // Pyramid: lower layers get more, the total stays.
  const PolicySpec p = *ParsePolicy("h2o:pyramid", 100);
  EXPECT_GT(p.LayerBudget(0, 10), p.LayerBudget(9, 10));
  int total = 0;
  for (int l = 0; l < 10; ++l) total += p.LayerBudget(l, 10);
  EXPECT_NEAR(total, 1000, 10);
}

// Streams tokens through a cache with a policy: memory stays bounded, the invariants hold,
// and the last token's attention equals naive attention over exactly the kept tokens.
TEST(PolicyCacheTest, CompactionKeepsMemoryBoundedAndAttentionExact) {
  for (const char* policy : {"sinks:sinks=4", "window", "knorm", "adakv:knorm", "knorm:merge", "h2o", "tova",
                             "snapkv", "adakv:h2o:merge", "expected", "h2o:pyramid"}) {
    SCOPED_TRACE(policy);
    const int hd = 16, H = 2, G = 2, L = 2, budget = 48;
    KvSpec spec{.n_layers = L, .n_kv_heads = H, .n_q_heads = H * G, .head_dim = hd, .max_context = 100000};
    KvConfig cfg = *ParsePreset("fp32");
    cfg.block_tokens = 16;
    auto c_or = KvCache::Create(spec, cfg, 4 << 20);
    ASSERT_TRUE(c_or.ok());
    KvCache& c = **c_or;
    ASSERT_TRUE(c.SetPolicy(*ParsePolicy(policy, budget)).ok());
    ThreadPool pool(2);
    const SeqId s = c.AddSequence();
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> k(H * hd), v(H * hd), q(H * G * hd), out(H * G * hd);
    for (int step = 0; step < 300; ++step) {
      for (auto* x : {&k, &v, &q})
        for (auto& e : *x) e = nd(rng);
      const StepChunk ch[] = {{s, 1, 0}};
      ASSERT_TRUE(c.BeginStep(ch).ok());
      for (int l = 0; l < L; ++l) {
        // The kept tokens before this step, read back: the naive reference attends to them.
        std::vector<std::vector<float>> kk(H), vv(H);
        for (int h = 0; h < H; ++h) {
          const int n = c.Slots(s, l, h);
          kk[h].resize((n + 1) * hd);
          vv[h].resize((n + 1) * hd);
          ASSERT_TRUE(c.ReadTokens(s, l, h, 0, n, kk[h].data(), vv[h].data()).ok());
          std::copy(k.begin() + h * hd, k.begin() + (h + 1) * hd, kk[h].begin() + n * hd);
          std::copy(v.begin() + h * hd, v.begin() + (h + 1) * hd, vv[h].begin() + n * hd);
        }
        c.Append(l, ch, k.data(), H * hd, v.data(), H * hd);
        c.Attend(pool, l, ch, q.data(), H * G * hd, out.data(), H * G * hd, 0.25f);
        for (int qh = 0; qh < H * G; ++qh) {
          const int h = qh / G, n = static_cast<int>(kk[h].size() / hd);
          std::vector<double> p(n);
          double m = -1e300, z = 0;
          for (int t = 0; t < n; ++t) {
            double dot = 0;
            for (int d = 0; d < hd; ++d) dot += q[qh * hd + d] * kk[h][t * hd + d];
            m = std::max(m, p[t] = dot * 0.25);
          }
          for (auto& x : p) z += (x = std::exp(x - m));
          for (int d = 0; d < hd; ++d) {
            double acc = 0;
            for (int t = 0; t < n; ++t) acc += p[t] * vv[h][t * hd + d];
            ASSERT_NEAR(out[qh * hd + d], acc / z, 1e-4) << "step " << step << " layer " << l;
          }
        }
      }
      c.EndStep(ch);
      c.CheckInvariants();
      const PolicySpec ps = *ParsePolicy(policy, budget);
      for (int l = 0; l < L; ++l)
        for (int h = 0; h < H; ++h) ASSERT_LE(c.Slots(s, l, h), ps.LayerBudget(l, L) + 16 + 1);
    }
    EXPECT_EQ(c.Length(s), 300);
    // Re-indexing policies place the next token right after the kept ones.
    const PolicySpec ps = *ParsePolicy(policy, budget);
    if (ps.reindexes()) {
      EXPECT_EQ(c.NextPosition(s), c.Slots(s, 0, 0));
    } else {
      EXPECT_EQ(c.NextPosition(s), 300);
    }
    c.RemoveSequence(s);
    c.CheckInvariants();
    EXPECT_EQ(c.blocks_in_use(), 0);
  }
}

TEST(PolicyCacheTest, PolicyAndFormatCombinationsAreChecked) {
  KvSpec spec{.n_layers = 1, .n_kv_heads = 1, .n_q_heads = 1, .head_dim = 64, .max_context = 1000, .rope_dim = 64,
              .layer_inv_freq = {std::vector<float>(32, 0.5f)}};
  KvConfig pre = *ParsePreset("fp16");
  pre.k = *ParseFormat("f16:pre", true);
  auto c = KvCache::Create(spec, pre, 1 << 20);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->SetPolicy(*ParsePolicy("h2o", 64)).ok());  // pre-RoPE keys need re-indexing
  EXPECT_TRUE((*c)->SetPolicy(*ParsePolicy("sinks", 64)).ok());
  EXPECT_FALSE((*c)->SetPolicy(*ParsePolicy("sinks", 8)).ok());  // smaller than a block
}

}  // namespace
}  // namespace slimkv::kv
