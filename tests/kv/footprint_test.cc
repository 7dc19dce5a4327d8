// The footprint rule (kv/footprint.h) against what the cache holds, step by step, and the
// peak bound against every state a growing sequence passes through.
#include "kv/footprint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "kv/kv_cache.h"

namespace slimkv::kv {
namespace {

struct Case {
  const char* preset;
  int residual;      // -1: the preset's
  int window;        // 0: global layers only; else layer 1 of 3 has this window
  int block_tokens;  // 0: the preset's
};

KvSpec Spec(int window) {
  KvSpec s{.n_layers = 3, .n_kv_heads = 2, .n_q_heads = 4, .head_dim = 64, .max_context = 4096};
  if (window > 0) s.layer_window = {0, window, 0};
  return s;
}

KvConfig Config(const Case& c) {
  auto cfg = MakeConfig(c.preset, "", "", c.residual);
  EXPECT_TRUE(cfg.ok()) << cfg.status().ToString();
  if (c.block_tokens > 0) {
    cfg->block_tokens = c.block_tokens;
    cfg->residual = (cfg->residual + c.block_tokens - 1) / c.block_tokens * c.block_tokens;
  }
  return *cfg;
}

void ExpectUsage(const KvUsage& got, const KvUsage& want, const std::string& where) {
  EXPECT_EQ(got.blocks, want.blocks) << where;
  EXPECT_EQ(got.bytes_allocated, want.bytes_allocated) << where;
  EXPECT_EQ(got.bytes_data, want.bytes_data) << where;
  EXPECT_EQ(got.bytes_meta, want.bytes_meta) << where;
  EXPECT_EQ(got.bytes_residual, want.bytes_residual) << where;
  EXPECT_EQ(got.bytes_waste, want.bytes_waste) << where;
}

class FootprintTest : public ::testing::TestWithParam<Case> {};

// A prompt in uneven chunks, then decode: after every step the cache holds exactly what the
// rule says, and during a step the blocks of the step in flight on top.
TEST_P(FootprintTest, CacheHoldsWhatTheRuleSays) {
  const Case c = GetParam();
  const KvSpec spec = Spec(c.window);
  const KvConfig config = Config(c);
  auto cache = KvCache::Create(spec, config, size_t{64} << 20);
  ASSERT_TRUE(cache.ok()) << cache.status().ToString();
  KvCache& kv = **cache;
  const SeqId seq = kv.AddSequence();
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const int width = spec.n_kv_heads * spec.head_dim;
  int length = 0;
  for (int n : {37, 100, 1, 64, 5, 1, 1, 200, 1, 1, 1, 13}) {
    const StepChunk chunk[] = {{seq, n, 0}};
    ASSERT_TRUE(kv.BeginStep(chunk).ok());
    std::vector<float> k(static_cast<size_t>(n) * width), v(k.size());
    for (auto& x : k) x = nd(rng);
    for (auto& x : v) x = nd(rng);
    for (int l = 0; l < spec.n_layers; ++l) kv.Append(l, chunk, k.data(), width, v.data(), width);
    const std::string at = "step of " + std::to_string(n) + " after " + std::to_string(length) + " tokens";
    EXPECT_EQ(kv.SequenceUsage(seq).bytes_allocated,
              SequenceFootprint(spec, config, length + n, n).bytes_allocated)
        << "in flight, " << at;
    kv.CheckInvariants();
    kv.EndStep(chunk);
    length += n;
    ExpectUsage(kv.SequenceUsage(seq), SequenceFootprint(spec, config, length), at);
    EXPECT_EQ(kv.bytes_in_use(), SequenceFootprint(spec, config, length).bytes_allocated) << at;
    kv.CheckInvariants();
  }
}

// Whatever steps a sequence grows by, it never holds more than the peak bound.
TEST_P(FootprintTest, PeakBoundsEveryStateOnTheWay) {
  const Case c = GetParam();
  const KvSpec spec = Spec(c.window);
  const KvConfig config = Config(c);
  for (int step : {1, 7, 100}) {
    for (int64_t tokens : {1, 33, 300, 1000}) {
      const size_t peak = PeakSequenceBytes(spec, config, tokens, step);
      for (int64_t t = 1; t <= tokens; ++t) {
        for (int64_t in_flight = 1; in_flight <= std::min<int64_t>(step, t); ++in_flight) {
          ASSERT_LE(SequenceFootprint(spec, config, t, in_flight).bytes_allocated, peak)
              << tokens << " tokens in steps of " << step << ": at " << t << " with " << in_flight
              << " in flight";
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, FootprintTest,
                         ::testing::Values(Case{"fp16", -1, 0, 0}, Case{"fp16", -1, 40, 0},
                                           Case{"int4", -1, 0, 0}, Case{"int4", 0, 70, 0},
                                           Case{"kivi2", -1, 100, 0}, Case{"tq3", -1, 0, 0},
                                           Case{"q4_0", -1, 33, 0}, Case{"fp32", 64, 0, 16},
                                           Case{"tqk3v2", 96, 50, 48}));

// The rule's blocks on the edges: windows free whole blocks only, staging seals whole blocks
// older than the residual window, tokens in flight are neither.
TEST(FootprintTest, RuleBlocksAtTheEdges) {
  KvConfig c = *MakeConfig("int4", "", "", 128);  // blocks of 64
  EXPECT_EQ(RuleBlocks(c, 0, 0).n_blocks, 0);
  StreamBlocks b = RuleBlocks(c, 0, 192);
  EXPECT_EQ(b.n_blocks, 3);
  EXPECT_EQ(b.n_sealed, 1);  // slots 0-63 are older than the 128 newest
  b = RuleBlocks(c, 0, 193, 1);
  EXPECT_EQ(b.n_blocks, 4);
  EXPECT_EQ(b.n_sealed, 1);     // the token in flight counts for the table, not for sealing
  b = RuleBlocks(c, 100, 300);  // the next token sees keys > 200: blocks 0-2 (slots < 192) die
  EXPECT_EQ(b.first_live, 3);
  EXPECT_EQ(b.n_sealed, 3);  // nothing between the dead blocks and the residual window
  EXPECT_EQ(b.n_blocks, 5);
  c.residual = 0;
  c.k = *ParseFormat("f16", true);
  c.v = *ParseFormat("f16", false);
  b = RuleBlocks(c, 0, 100);  // nothing staged: no block is "sealed"
  EXPECT_EQ(b.n_sealed, 0);
  EXPECT_EQ(StagedBlockBytes(c, 64), SealedBlockBytes(c, 64));
}

}  // namespace
}  // namespace slimkv::kv
