// One forward call over several sequences gives each sequence exactly what it would get
// alone, and decoding token by token through the cache gives what prefill gives.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/engine.h"
#include "kv/format.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace slimkv {
namespace {

std::unique_ptr<engine::Engine> Make(const std::string& path) { return testing::MakeTestEngine(path); }

float MaxDiff(const float* a, const float* b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

TEST(BatchTest, SequencesInOneBatchMatchSequencesAlone) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = Make(path);
  ASSERT_TRUE(e);
  const auto& tok = e->tokenizer();
  const int V = e->model().config().n_vocab;
  const std::vector<int32_t> a = tok.Encode("The quick brown fox jumps over the lazy dog.", false, false);
  const std::vector<int32_t> b = tok.Encode("In 1969, astronauts first walked on", false, false);
  // Alone: prefill, then one decode token each.
  std::vector<float> la, lb, la2, lb2;
  const int32_t next_a = 42, next_b = 1337;
  for (auto [ids, l1, l2, next] : {std::tuple{&a, &la, &la2, next_a}, std::tuple{&b, &lb, &lb2, next_b}}) {
    const kv::SeqId s = e->kv().AddSequence();
    ASSERT_TRUE(e->Prefill(s, *ids, -1, l1).ok());
    const model::BatchEntry d{s, {&next, 1}};
    ASSERT_TRUE(e->Step(e->kv(), {&d, 1}, l2).ok());
    e->kv().RemoveSequence(s);
  }
  // Together: both prompts in one batch, then both decode tokens in one batch.
  const kv::SeqId sa = e->kv().AddSequence(), sb = e->kv().AddSequence();
  std::vector<float> both;
  const model::BatchEntry pre[] = {{sa, a}, {sb, b}};
  ASSERT_TRUE(e->Step(e->kv(), pre, &both).ok());
  ASSERT_EQ(both.size(), 2u * V);
  EXPECT_LT(MaxDiff(both.data(), la.data(), V), 1e-4);
  EXPECT_LT(MaxDiff(both.data() + V, lb.data(), V), 1e-4);
  const model::BatchEntry dec[] = {{sa, {&next_a, 1}}, {sb, {&next_b, 1}}};
  ASSERT_TRUE(e->Step(e->kv(), dec, &both).ok());
  EXPECT_LT(MaxDiff(both.data(), la2.data(), V), 1e-4);
  EXPECT_LT(MaxDiff(both.data() + V, lb2.data(), V), 1e-4);
  e->kv().RemoveSequence(sa);
  e->kv().RemoveSequence(sb);
  e->kv().CheckInvariants();
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
}

TEST(BatchTest, TokenByTokenDecodeMatchesPrefill) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = Make(path);
  ASSERT_TRUE(e);
  const int V = e->model().config().n_vocab;
  const std::vector<int32_t> ids = e->tokenizer().Encode(
      "Decode and prefill must agree: every token sees exactly the tokens before it, whether "
      "they arrive one by one or all at once, across block boundaries of the cache.", false, false);
  ASSERT_GT(ids.size(), 33u);  // crosses a 32-token block boundary
  std::vector<float> all;
  kv::SeqId s = e->kv().AddSequence();
  ASSERT_TRUE(e->Prefill(s, ids, 0, &all).ok());
  e->kv().RemoveSequence(s);
  s = e->kv().AddSequence();
  std::vector<float> one;
  for (size_t i = 0; i < ids.size(); ++i) {
    const model::BatchEntry d{s, {&ids[i], 1}};
    ASSERT_TRUE(e->Step(e->kv(), {&d, 1}, &one).ok());
    ASSERT_LT(MaxDiff(one.data(), all.data() + i * V, V), 2e-4) << "token " << i;
  }
  e->kv().RemoveSequence(s);
}

TEST(BatchTest, BadBatchesAreErrorsAndChangeNothing) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = Make(path);
  ASSERT_TRUE(e);
  const kv::SeqId s = e->kv().AddSequence();
  std::vector<float> logits;
  const int32_t bad = e->model().config().n_vocab;
  const model::BatchEntry b1{s, {&bad, 1}};
  EXPECT_EQ(e->Step(e->kv(), {&b1, 1}, &logits).code(), StatusCode::kInvalidArgument);
  const model::BatchEntry b2{s, {}};
  EXPECT_EQ(e->Step(e->kv(), {&b2, 1}, &logits).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->kv().Length(s), 0);
  // A prompt longer than the pool can hold: ResourceExhausted, nothing allocated.
  std::vector<int32_t> long_prompt(5000, 100);
  const model::BatchEntry b3{s, long_prompt};
  EXPECT_EQ(e->Step(e->kv(), {&b3, 1}, &logits).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e->kv().blocks_in_use(), 0);
  // Generate rejects a prompt that does not fit the context, naming both lengths.
  std::vector<int32_t> too_long(300, 100);
  auto r = e->Generate(too_long, {}, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("300"), std::string::npos);
  EXPECT_NE(r.status().message().find("256"), std::string::npos);
}

}  // namespace
}  // namespace slimkv
