// Sampling penalties and log-probabilities (engine/sampler.h,
// engine/logprobs.h).
#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

#include "engine/logprobs.h"

namespace slimkv::engine {
namespace {

SamplingParams Greedy() {
  SamplingParams p;
  p.temperature = 0;
  return p;
}

// Frequency and presence penalties count generated tokens only, as OpenAI and
// vLLM define them.
TEST(SamplerTest, FrequencyAndPresencePenaltiesCountGeneratedTokens) {
  const std::vector<float> logits = {2.0f, 1.9f, 1.0f, 0.0f};
  SamplingParams p = Greedy();
  p.frequency_penalty = 0.06f;
  // Token 0 was generated twice: 2.0 - 0.12 = 1.88 < 1.9.
  const std::vector<TokenId> history = {1, 1, 1, 0, 0};  // prompt of 3 (three 1s), then 0, 0
  EXPECT_EQ(Sampler(p, 3).Sample(logits, history), 1);
  // The prompt's tokens are not counted: token 1 (three times in the prompt)
  // keeps its logit.
  p.frequency_penalty = 0;
  p.presence_penalty = 0.2f;
  EXPECT_EQ(Sampler(p, 3).Sample(logits, history), 1);  // 2.0 - 0.2 < 1.9
  const std::vector<TokenId> prompt_only = {0, 0, 0};
  EXPECT_EQ(Sampler(p, 3).Sample(logits, prompt_only), 0);
  // Negative penalties encourage repetition.
  p.presence_penalty = -0.5f;
  const std::vector<TokenId> used_two = {2};
  EXPECT_EQ(Sampler(p, 0).Sample(logits, used_two), 0);  // 1.0 + 0.5 < 2.0 still
  p.presence_penalty = -1.5f;
  EXPECT_EQ(Sampler(p, 0).Sample(logits, used_two), 2);
  p.presence_penalty = 2.5f;
  EXPECT_EQ(p.Validate().code(), StatusCode::kInvalidArgument);
  p.presence_penalty = 0;
  p.frequency_penalty = NAN;
  EXPECT_EQ(p.Validate().code(), StatusCode::kInvalidArgument);
}

TEST(LogprobsTest, LogSoftmaxOfTheRawLogitsWithTheTopTokens) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f};
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  const TokenLogprob r = ComputeLogprob(logits, 2, 3);
  EXPECT_NEAR(r.logprob, 2.0 - std::log(z), 1e-6);
  EXPECT_EQ(r.rank, 3);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);  // a tie keeps the lower id first
  EXPECT_EQ(r.top[1].token, 3);
  EXPECT_EQ(r.top[2].token, 2);
  EXPECT_NEAR(r.top[0].logprob, 3.0 - std::log(z), 1e-6);
  double total = 0;
  for (size_t t = 0; t < logits.size(); ++t) total += std::exp(ComputeLogprob(logits, t, 0).logprob);
  EXPECT_NEAR(total, 1.0, 1e-6);
  // Large logits neither overflow nor lose the small differences.
  const std::vector<float> big = {1000.0f, 999.0f};
  EXPECT_NEAR(ComputeLogprob(big, 1, 0).logprob, -1.0 - std::log1p(std::exp(-1.0)), 1e-5);
  EXPECT_TRUE(ComputeLogprob(logits, 0, 0).top.empty());
  EXPECT_EQ(ComputeLogprob(logits, 0, 99).top.size(), logits.size());
}

}  // namespace
}  // namespace slimkv::engine
