// `slimkv bench`: its test names, and the bytes a decode step reads — the weights plus the KV the sequence
// holds midway through the timed steps, which under an eviction policy is the policy's budget, not the
// context (the figure once printed the whole context's bytes with a policy too).
#include "eval/bench.h"

#include <gtest/gtest.h>

#include "engine/engine.h"
#include "kv/footprint.h"
#include "test_util.h"

namespace slimkv::eval {
namespace {

TEST(BenchTest, ParsesTestNames) {
  auto pp = ParseBenchCase("pp512");
  ASSERT_TRUE(pp.ok());
  EXPECT_EQ(pp->prompt_tokens, 512);
  EXPECT_EQ(pp->gen_tokens, 0);
  auto tg = ParseBenchCase("tg128@d2048");
  ASSERT_TRUE(tg.ok());
  EXPECT_EQ(tg->prompt_tokens, 2048);
  EXPECT_EQ(tg->gen_tokens, 128);
  for (const char* bad : {"", "tg", "pp0", "pp512@d16", "tg8@d", "tg99999999999", "xx8"}) {
    EXPECT_FALSE(ParseBenchCase(bad).ok()) << bad;
  }
}

std::unique_ptr<engine::Engine> MakeEngine(const std::string& path, const char* policy, int budget) {
  engine::EngineOptions eo{.model_path = path, .kv = *kv::ParsePreset("int4"), .n_ctx = 1024, .n_seq = 1};
  if (policy) eo.policy = *kv::ParsePolicy(policy, budget);
  auto e = engine::Engine::Create(eo);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

TEST(BenchTest, BytesPerStepAreTheWeightsAndTheKvHeld) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  constexpr int kDepth = 384, kGen = 4;
  const BenchCase c = *ParseBenchCase("tg4@d384");
  // Without a policy: the footprint rule's bytes midway (the steps run at depths D .. D + N).
  auto full = MakeEngine(path, nullptr, 0);
  ASSERT_NE(full, nullptr);
  auto r = RunBench(*full, c, 1, 7);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const double weights = static_cast<double>(full->model().WeightBytesPerToken());
  auto held = [&](int tokens) {
    return static_cast<double>(
        kv::SequenceFootprint(full->kv().spec(), full->kv().config(), tokens).bytes_held());
  };
  const double expect_full = weights + (held(kDepth) + held(kDepth + kGen)) / 2;
  EXPECT_NEAR(r->bytes_per_step, expect_full, 1e-9 * expect_full);
  EXPECT_NEAR(r->gbps, r->bytes_per_step * r->tokens_per_s / 1e9, 1e-9 * r->gbps);
  // Same context: the timed repetition runs at depths D + N .. D + 2N.
  auto same = RunBench(*full, c, 1, 7, /*same_context=*/true);
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  const double expect_same = weights + (held(kDepth + kGen) + held(kDepth + 2 * kGen)) / 2;
  EXPECT_NEAR(same->bytes_per_step, expect_same, 1e-9 * expect_same);

  // With h2o at 64 tokens the sequence holds what the policy bounds, well under the context's bytes.
  auto evicting = MakeEngine(path, "h2o", 64);
  ASSERT_NE(evicting, nullptr);
  const double bound = static_cast<double>(kv::PolicyPeakSequenceBytes(
      evicting->kv().spec(), evicting->kv().config(), evicting->kv().policy(), kDepth + 2 * kGen, 1));
  for (bool same_context : {false, true}) {
    auto e = RunBench(*evicting, c, 1, 7, same_context);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    const double kv_bytes = e->bytes_per_step - weights;
    EXPECT_GT(kv_bytes, 0) << same_context;
    EXPECT_LE(kv_bytes, bound) << same_context;
    EXPECT_LT(kv_bytes, held(kDepth) / 2) << same_context;
  }
}

}  // namespace
}  // namespace slimkv::eval
