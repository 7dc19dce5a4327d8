// Perplexity from the scheduler's prompt log-probabilities (what an evaluator
// gets from the API's echo + logprobs) equals eval::Perplexity on the same
// windows: the same tokens, BOS first, the second half of each window scored.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/scheduler.h"
#include "eval/perplexity.h"
#include "test_util.h"

namespace slimkv::eval {
namespace {

TEST(PromptLogprobsTest, PerplexityFromPromptLogprobsEqualsPerplexity) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  const char *dir = std::getenv("SLIMKV_DATA_DIR");
  std::ifstream in(std::string(dir ? dir : testing::SourceDir() + "/data") + "/pg_essays.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str().substr(0, 20000);
  engine::EngineOptions eo{.model_path = path, .kv = *kv::ParsePreset("fp16"), .n_ctx = 256, .n_seq = 2};
  auto e = engine::Engine::Create(eo);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  const auto &tok = (*e)->tokenizer();
  const std::vector<int32_t> tokens = tok.Encode(text, tok.add_bos_default(), false);
  constexpr int kCtx = 128, kChunks = 3;
  auto ppl = Perplexity(**e, tokens, {.n_ctx = kCtx, .max_chunks = kChunks, .progress = false});
  ASSERT_TRUE(ppl.ok()) << ppl.status().ToString();
  auto sched = engine::Scheduler::Create(e->get(), {});
  ASSERT_TRUE(sched.ok());
  double nll = 0;
  int64_t scored = 0;
  for (int c = 0; c < kChunks; ++c) {
    engine::RequestParams p;
    p.prompt.assign(tokens.begin() + c * kCtx, tokens.begin() + (c + 1) * kCtx);
    if (tok.add_bos_default() && tok.bos() >= 0) p.prompt[0] = tok.bos();  // as Perplexity does
    p.max_tokens = 1;
    p.prompt_logprobs = true;
    p.logprobs = 0;
    std::vector<engine::TokenLogprob> got;
    p.on_output = [&](const engine::RequestOutput &o) {
      if (!o.prompt_logprobs.empty()) got = o.prompt_logprobs;
    };
    ASSERT_TRUE((*sched)->Submit(std::move(p)).ok());
    while (!(*sched)->Idle()) (*sched)->Step();
    ASSERT_EQ(got.size(), static_cast<size_t>(kCtx - 1));
    // Perplexity scores tokens kCtx/2 + 1 .. kCtx - 1; got[t - 1] is token t's.
    for (int t = kCtx / 2 + 1; t < kCtx; ++t) {
      EXPECT_EQ(got[t - 1].token, tokens[c * kCtx + t]);
      nll -= got[t - 1].logprob;
      ++scored;
    }
  }
  EXPECT_EQ(scored, ppl->scored_tokens);
  EXPECT_NEAR(std::exp(nll / scored), ppl->ppl, 1e-4 * ppl->ppl);
}

}  // namespace
}  // namespace slimkv::eval
