// Every architecture slimkv runs, on a tiny random-weight GGUF written by
// tools/oracle/make_model.py the way llama.cpp's converter writes real ones (metadata keys,
// tensor names, vocabulary, chat template; weights in the quantized types of downloaded files),
// checked against the float64 numpy oracle: logits within 1e-3 of the oracle's range, greedy
// tokens identical; then a quantized KV preset and an eviction policy through the engine.
// The models are small enough (2 layers, 256 wide) that the whole suite takes seconds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "engine/engine.h"
#include "kv/format.h"
#include "kv/policy.h"
#include "oracle_util.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace slimkv {
namespace {

namespace fs = std::filesystem;
using namespace ::slimkv::testing;  // NOLINT: the oracle helpers

struct Arch {
  const char* name;       // make_model.py's architecture
  const char* gguf_arch;  // general.architecture it writes
  const char* chat;       // chat style its template is detected as
};

constexpr Arch kArchs[] = {
    {"llama3", "llama", "llama3"}, {"llama-yarn", "llama", "llama3"}, {"qwen2", "qwen2", "chatml"},
    {"qwen3", "qwen3", "chatml"},  {"mistral", "llama", "llama2"},    {"phi3", "phi3", "phi3"},
};

class ArchOracleTest : public ::testing::TestWithParam<Arch> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("slimkv_arch_{}_{}", GetParam().name, ::getpid());
    fs::create_directories(dir_);
    path_ = (dir_ / "model.gguf").string();
    std::string out;
    const std::string cmd = fmt::format("'{}' '{}/tools/oracle/make_model.py' {} '{}' 2>&1", VenvPython(),
                                        SourceDir(), GetParam().name, path_);
    if (RunCommand(cmd, &out) != 0) {
      if (ModelsRequired()) FAIL() << cmd << "\n" << out;
      GTEST_SKIP() << "cannot write the model (python with gguf and numpy): " << out;
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  // About 100 tokens of the eval text: past Mistral's 48-token window, YaRN's and LongRoPE's
  // 64-token original context.
  std::vector<int32_t> Prompt(engine::Engine& e) {
    const tokenizer::Tokenizer& tok = e.tokenizer();
    std::vector<int32_t> ids = EvalTextTokens(tok, 100, tok.add_bos_default());
    EXPECT_GE(ids.size(), 90u);
    return ids;
  }

  fs::path dir_;
  std::string path_;
};

TEST_P(ArchOracleTest, LogitsAndGreedyTokensMatchTheNumpyReference) {
  auto e = MakeTestEngine(path_, {.kv = "fp32", .n_ctx = 1024, .n_seq = 1, .prefill_chunk = 16});
  ASSERT_TRUE(e);
  EXPECT_EQ(e->model().config().arch, GetParam().gguf_arch);
  const std::vector<int32_t> ids = Prompt(*e);
  {
    Oracle oracle(path_);
    ExpectClose(EngineLogits(*e, ids), oracle.Logits(ids), GetParam().name);
    const std::vector<int32_t> head(ids.begin(), ids.begin() + 40);
    EXPECT_EQ(GreedyTokens(*e, head, 24), oracle.Greedy(head, 24));
  }
  // fp16 KV, prompt in one piece.
  auto e16 = MakeTestEngine(path_, {.kv = "fp16", .n_ctx = 1024, .n_seq = 1, .prefill_chunk = 512});
  ASSERT_TRUE(e16);
  Oracle oracle(path_);
  ExpectClose(EngineLogits(*e16, ids), oracle.Logits(ids), "fp16 KV");
}

// The chat template each converter writes is recognised as its style, and the rendered
// prompt tokenizes (special tokens parsed) into a prompt the model runs.
TEST_P(ArchOracleTest, ChatTemplateIsRecognisedAndRuns) {
  auto e = MakeTestEngine(path_, {.kv = "fp32", .n_ctx = 256, .n_seq = 1});
  ASSERT_TRUE(e);
  const tokenizer::Tokenizer& tok = e->tokenizer();
  auto style = tokenizer::DetectChatStyle(tok);
  ASSERT_TRUE(style.ok()) << style.status().ToString();
  EXPECT_STREQ(tokenizer::ChatStyleName(*style), GetParam().chat);
  const std::string text = tokenizer::ApplyChatTemplate(*style, tok.chat_template(),
                                                        {{"user", "What is the capital of France?"}}, true);
  const std::vector<int32_t> ids = tok.Encode(text, tok.add_bos_default(), /*parse_special=*/true);
  EXPECT_LT(ids.size(), text.size());  // the turn markers are single special tokens
  EXPECT_EQ(GreedyTokens(*e, ids, 4).size(), 4u);
}

// A quantized KV preset and an eviction policy through the engine on every architecture:
// int4 keys per channel / values per token against the fp32 cache (the bound is int4's:
// a 16-level grid), and StreamingLLM's sinks + window holding the cache to its budget.
TEST_P(ArchOracleTest, QuantizedKvAndEvictionRunThroughTheEngine) {
  auto e32 = MakeTestEngine(path_, {.kv = "fp32", .n_ctx = 1024, .n_seq = 1, .prefill_chunk = 32});
  auto e4 = MakeTestEngine(path_, {.kv = "int4", .n_ctx = 1024, .n_seq = 1, .prefill_chunk = 32});
  ASSERT_TRUE(e32 && e4);
  const std::vector<int32_t> ids = Prompt(*e32);
  const std::vector<float> ref = EngineLogits(*e32, ids), q4 = EngineLogits(*e4, ids);
  ASSERT_EQ(ref.size(), q4.size());
  const size_t V = e32->model().config().n_vocab;
  int top1_same = 0;
  for (size_t r = 0; r < ids.size(); ++r) {
    const auto a = std::max_element(ref.begin() + r * V, ref.begin() + (r + 1) * V);
    const auto b = std::max_element(q4.begin() + r * V, q4.begin() + (r + 1) * V);
    top1_same += (a - ref.begin()) == (b - q4.begin());
  }
  EXPECT_GE(top1_same, static_cast<int>(0.8 * ids.size())) << "int4 KV changed the argmax too often";

  engine::EngineOptions o;
  o.model_path = path_;
  o.kv = *kv::ParsePreset("int4");
  o.n_ctx = 1024;
  o.prefill_chunk = 32;
  o.policy = *kv::ParsePolicy("sinks", 64);
  auto ev = engine::Engine::Create(o);
  ASSERT_TRUE(ev.ok()) << ev.status().ToString();
  engine::GenerateOptions go;
  go.max_tokens = 40;
  go.sampling.temperature = 0;
  go.stop_at_end_of_generation = false;
  auto st = (*ev)->Generate(ids, go, [](int32_t, const std::string&) { return true; });
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ(st->generated_tokens, 40);
  EXPECT_LE(st->kv_usage.tokens, 64 + 2 * o.kv.block_tokens + o.prefill_chunk)
      << "sinks kept more than its budget";
}

INSTANTIATE_TEST_SUITE_P(Architectures, ArchOracleTest, ::testing::ValuesIn(kArchs),
                         [](const ::testing::TestParamInfo<Arch>& i) {
                           std::string n = i.param.name;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// Phi-3's LongRoPE: a context within the original one uses the short factors (the test
// above runs 1024 tokens of context: the long ones), as llama.cpp chooses by context size.
TEST(ArchOracleTest, Phi3ShortFactorsWithinTheOriginalContext) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("slimkv_phi3_short_{}", ::getpid());
  fs::create_directories(dir);
  const std::string path = (dir / "phi3.gguf").string();
  std::string out;
  const std::string cmd =
      fmt::format("'{}' '{}/tools/oracle/make_model.py' phi3 '{}' 2>&1", VenvPython(), SourceDir(), path);
  if (RunCommand(cmd, &out) != 0) GTEST_SKIP() << out;
  {
    auto e = MakeTestEngine(path, {.kv = "fp32", .n_ctx = 64, .n_seq = 1, .prefill_chunk = 16});
    ASSERT_TRUE(e);
    std::vector<int32_t> ids = EvalTextTokens(e->tokenizer(), 50, true);
    Oracle oracle(path, "--n-ctx 64");
    const std::vector<float> ref = oracle.Logits(ids);
    ExpectClose(EngineLogits(*e, ids), ref, "phi3, short factors");
    // The long factors give other logits: the choice is visible.
    auto e_long = MakeTestEngine(path, {.kv = "fp32", .n_ctx = 1024, .n_seq = 1, .prefill_chunk = 16});
    const std::vector<float> long_logits = EngineLogits(*e_long, ids);
    double diff = 0;
    for (size_t i = 0; i < ref.size(); ++i) diff = std::max<double>(diff, std::abs(long_logits[i] - ref[i]));
    EXPECT_GT(diff, 1e-2);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace slimkv
