// response_format json_object through the scheduler with real models: greedy and sampled
// answers to several chat prompts are JSON objects (parsed by nlohmann::json) whenever they
// finish with stop, every streamed token keeps the text a valid prefix, and a request that
// runs out of max_tokens ends with length. SmolLM2 (byte-level BPE) and, when present,
// Gemma-3 270M (SentencePiece with byte fallback).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/json_constraint.h"
#include "engine/scheduler.h"
#include "engine_test_util.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace slimkv::engine {
namespace {

const char* kPrompts[] = {
    "Describe a cat as a JSON object with the keys name, age and colors.",
    "Give me a JSON object with the capital cities of France, Italy and Spain.",
    "Return a JSON object describing a book: title, author, year.",
    "List three fruits and their colors as JSON.",
};

struct Collected {
  std::string text;
  std::vector<TokenId> tokens;
  RequestOutput final;
  bool finished = false;
  bool prefix_ok = true;  // the text was a valid prefix after every event
};

std::vector<TokenId> ChatPrompt(const tokenizer::Tokenizer& tok, const std::string& user) {
  auto style = tokenizer::DetectChatStyle(tok);
  EXPECT_TRUE(style.ok());
  const std::string text = tokenizer::ApplyChatTemplate(*style, tok.chat_template(), {{"user", user}},
                                                        /*add_generation_prompt=*/true);
  std::vector<TokenId> ids = tok.Encode(text, tok.add_bos_default(), /*parse_special=*/true);
  if (ids.size() >= 2 && ids[0] == tok.bos() && ids[1] == tok.bos()) ids.erase(ids.begin());
  return ids;
}

RequestParams JsonRequest(std::vector<TokenId> prompt, float temperature, uint64_t seed, int max_tokens,
                          Collected* c) {
  RequestParams p;
  p.prompt = std::move(prompt);
  p.max_tokens = max_tokens;
  p.sampling.temperature = temperature;
  p.sampling.seed = seed;
  p.json_object = true;
  p.on_output = [c](const RequestOutput& o) {
    if (o.finished) {
      c->finished = true;
      c->final = o;
      return;
    }
    c->tokens.push_back(o.token);
    c->text += o.text;
    c->prefix_ok = c->prefix_ok && JsonValidator().Push(c->text);
  };
  return p;
}

void CheckModel(const std::string& path) {
  auto e = testing::MakeTestEngine(path, {.n_ctx = 512, .n_seq = 8});
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {.max_running = 8, .max_batch_tokens = 256});
  ASSERT_TRUE(s.ok());
  const tokenizer::Tokenizer& tok = e->tokenizer();
  struct Run {
    const char* prompt;
    float temperature;
    uint64_t seed;
  };
  std::vector<Run> runs;
  for (const char* p : kPrompts) {
    runs.push_back({p, 0.0f, 0});
    runs.push_back({p, 0.8f, 1});
    runs.push_back({p, 1.2f, 2});
  }
  std::vector<Collected> got(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    ASSERT_TRUE((*s)->Submit(JsonRequest(ChatPrompt(tok, runs[i].prompt), runs[i].temperature, runs[i].seed,
                                         200, &got[i]))
                    .ok());
  }
  while (!(*s)->Idle()) (*s)->Step();
  int objects = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << runs[i].prompt << " at temperature " << runs[i].temperature);
    const Collected& c = got[i];
    ASSERT_TRUE(c.finished);
    EXPECT_TRUE(c.prefix_ok) << c.text;
    // No end-of-generation or control token inside.
    for (TokenId t : c.tokens) {
      EXPECT_FALSE(tok.IsEndOfGeneration(t)) << c.text;
      EXPECT_NE(tok.GetTokenType(t), tokenizer::TokenType::kControl) << c.text;
    }
    if (c.final.finish_reason == FinishReason::kStop) {
      const auto parsed = nlohmann::json::parse(c.text, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(parsed.is_discarded()) << c.text;
      EXPECT_TRUE(parsed.is_object()) << c.text;
      ++objects;
    } else {
      EXPECT_EQ(c.final.finish_reason, FinishReason::kLength) << c.text;
      EXPECT_EQ(c.final.usage.completion_tokens, 200);
    }
  }
  // Most answers close their object well within 200 tokens.
  EXPECT_GE(objects, static_cast<int>(runs.size()) / 2);
}

TEST(JsonObjectTest, SmolLm2AnswersAreJsonObjects) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  CheckModel(path);
}

TEST(JsonObjectTest, Gemma3AnswersAreJsonObjects) {
  SLIMKV_REQUIRE_MODEL(path, "gemma-3-270m-q4_k_m.gguf");
  CheckModel(path);
}

// A constrained request that runs out of tokens ends with length and the start of an object;
// two greedy runs of the same prompt, batched together, give the same tokens.
TEST(JsonObjectTest, LengthCutsAndGreedyRepeats) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = testing::MakeTestEngine(path, {.n_ctx = 256, .n_seq = 2});
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {.max_running = 2});
  ASSERT_TRUE(s.ok());
  const std::vector<TokenId> prompt = ChatPrompt(e->tokenizer(), kPrompts[0]);
  Collected a, b;
  ASSERT_TRUE((*s)->Submit(JsonRequest(prompt, 0, 0, 5, &a)).ok());
  ASSERT_TRUE((*s)->Submit(JsonRequest(prompt, 0, 0, 5, &b)).ok());
  while (!(*s)->Idle()) (*s)->Step();
  ASSERT_TRUE(a.finished && b.finished);
  EXPECT_EQ(a.final.finish_reason, FinishReason::kLength);
  EXPECT_EQ(a.tokens.size(), 5u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_TRUE(a.prefix_ok);
  EXPECT_EQ(a.text.substr(a.text.find_first_not_of(" \n\t\r"), 1), "{") << a.text;
}

TEST(JsonObjectTest, NeedsATokenizerAndGeneratedTokens) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = testing::MakeTestEngine(path, {.n_ctx = 64, .n_seq = 1});
  ASSERT_TRUE(e);
  auto s = Scheduler::Create(e.get(), {});
  ASSERT_TRUE(s.ok());
  RequestParams p;
  p.prompt = {1, 2, 3};
  p.json_object = true;
  p.forced = {4, 5};
  const auto r = (*s)->Submit(p);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("json_object"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace slimkv::engine
