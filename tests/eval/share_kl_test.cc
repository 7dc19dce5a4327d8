// With cross-layer KV sharing, perplexity's KL base is the whole model (every layer its own
// cache), not the model with the same sharing: the sharing is what is measured.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "eval/perplexity.h"
#include "test_util.h"

namespace slimkv::eval {
namespace {

TEST(ShareKlTest, TheBaseOfASharingModelIsTheWholeModel) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  const char* dir = std::getenv("SLIMKV_DATA_DIR");
  std::ifstream in(std::string(dir ? dir : testing::SourceDir() + "/data") + "/pg_essays.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  engine::EngineOptions eo{.model_path = path, .kv = *kv::ParsePreset("fp16"), .n_ctx = 128};
  auto whole = engine::Engine::Create(eo);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  eo.kv_share = "20=14,22=14,24=14";
  auto shared = engine::Engine::Create(eo);
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  const std::vector<int32_t> tokens = (*whole)->tokenizer().Encode(ss.str().substr(0, 8000), true, false);
  const PerplexityOptions po{
      .n_ctx = 128, .max_chunks = 2, .kl_base = *kv::ParsePreset("fp16"), .progress = false};
  auto ref = Perplexity(**whole, tokens, {.n_ctx = 128, .max_chunks = 2, .progress = false});
  auto r = Perplexity(**shared, tokens, po);
  ASSERT_TRUE(ref.ok() && r.ok());
  EXPECT_NEAR(r->base_ppl, ref->ppl, 1e-6 * ref->ppl);  // the base ran without sharing
  EXPECT_NE(r->ppl, ref->ppl);
  EXPECT_GT(r->mean_kl, 1e-4);
  EXPECT_TRUE((*shared)->model().kv_share().active());  // and the model is left sharing
}

}  // namespace
}  // namespace slimkv::eval
