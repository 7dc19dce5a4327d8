// Log-probabilities through the scheduler (what the API's logprobs and echo
// return): each sampled token's equals the log-softmax of the logits a direct
// prefill gives, the prompt's are computed even when the prefix cache holds the
// prompt, and perplexity computed from prompt log-probabilities equals
// eval::Perplexity on the same window.
#include "engine/logprobs.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/scheduler.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace slimkv::engine {
namespace {

struct Events {
  std::vector<RequestOutput> outputs;
};

RequestParams Request(const std::vector<TokenId> &prompt, int max_tokens, Events *ev) {
  RequestParams p;
  p.prompt = prompt;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  p.sampling.temperature = 0;
  p.on_output = [ev](const RequestOutput &o) { ev->outputs.push_back(o); };
  return p;
}

void RunAll(Scheduler &s) {
  while (!s.Idle()) s.Step();
}

// Log-probabilities of every prompt token after the first by one direct
// prefill.
std::vector<TokenLogprob> Direct(Engine &e, const std::vector<TokenId> &prompt, int top) {
  std::vector<float> logits;
  const kv::SeqId seq = e.kv().AddSequence();
  EXPECT_TRUE(e.Prefill(seq, prompt, 0, &logits).ok());
  e.kv().RemoveSequence(seq);
  const int V = e.model().config().n_vocab;
  std::vector<TokenLogprob> out;
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    out.push_back(ComputeLogprob(std::span<const float>(logits.data() + i * V, V), prompt[i + 1], top));
  }
  return out;
}

TEST(LogprobsTest, SampledAndPromptTokensMatchADirectPrefill) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = testing::MakeTestEngine(path, {.kv = "fp32", .n_ctx = 256, .n_seq = 4});
  ASSERT_TRUE(e);
  auto sched = Scheduler::Create(e.get(), {.max_batch_tokens = 16});  // the prompt runs in chunks
  ASSERT_TRUE(sched.ok());
  const std::vector<TokenId> prompt = e->tokenizer().Encode(
      "The capital of France is Paris, and the capital "
      "of Italy is Rome. The capital of",
      true, false);
  // First a plain request, so the prefix cache holds the prompt's blocks.
  Events plain;
  ASSERT_TRUE((*sched)->Submit(Request(prompt, 4, &plain)).ok());
  RunAll(**sched);
  Events ev;
  RequestParams p = Request(prompt, 4, &ev);
  p.logprobs = 3;
  p.prompt_logprobs = true;
  ASSERT_TRUE((*sched)->Submit(std::move(p)).ok());
  RunAll(**sched);
  ASSERT_EQ(ev.outputs.size(), 5u);  // four tokens and the final event
  const std::vector<TokenLogprob> want = Direct(*e, prompt, 3);
  const auto &got = ev.outputs[0].prompt_logprobs;
  ASSERT_EQ(got.size(), prompt.size() - 1);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].token, prompt[i + 1]);
    EXPECT_NEAR(got[i].logprob, want[i].logprob, 1e-4) << i;
    ASSERT_EQ(got[i].top.size(), 3u);
    EXPECT_EQ(got[i].top[0].token, want[i].top[0].token);
  }
  EXPECT_EQ(ev.outputs[0].usage.cached_tokens, 0);
  std::vector<TokenId> seen = prompt;
  for (int i = 0; i < 4; ++i) {
    const RequestOutput &o = ev.outputs[i];
    ASSERT_TRUE(o.has_logprob);
    EXPECT_EQ(o.logprob.token, o.token);
    EXPECT_EQ(o.logprob.top[0].token, o.token);  // greedy: the most likely token
    EXPECT_EQ(o.logprob.rank, 1);
    std::vector<TokenId> next = seen;
    next.push_back(o.token);
    EXPECT_NEAR(o.logprob.logprob, Direct(*e, next, 0).back().logprob, 1e-4);
    seen = next;
    if (i > 0) {
      EXPECT_TRUE(o.prompt_logprobs.empty());
    }
  }
  EXPECT_FALSE(ev.outputs.back().has_logprob);
  EXPECT_FALSE(plain.outputs[0].has_logprob);  // only when asked
  Events bad;
  RequestParams q = Request(prompt, 1, &bad);
  q.logprobs = kMaxTopLogprobs + 1;
  EXPECT_EQ((*sched)->Submit(std::move(q)).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace slimkv::engine
