// The engine's logits against the independent float64 numpy reference (tools/oracle), which
// reads the same GGUF with the PyPI `gguf` package and shares no code with slimkv.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "kv/format.h"
#include "oracle_util.h"
#include "test_util.h"

namespace slimkv {
namespace {

namespace fs = std::filesystem;
using namespace ::slimkv::testing;  // NOLINT: the oracle helpers

std::vector<std::vector<int32_t>> Prompts(const tokenizer::Tokenizer& tok) {
  std::vector<std::vector<int32_t>> p;
  for (const char* text : {"The capital of France is Paris, and the capital of Italy is",
                           "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
                           "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n"}) {
    p.push_back(tok.Encode(text, tok.add_bos_default(), /*parse_special=*/true));
  }
  return p;
}

TEST(OracleTest, SmolLM2LogitsMatchTheNumpyReference) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  Oracle oracle(path);
  auto e32 = MakeEngine(path, "fp32", 512);
  auto e16 = MakeEngine(path, "fp16", 512);
  ASSERT_TRUE(e32 && e16);
  for (const auto& ids : Prompts(e32->tokenizer())) {
    const std::vector<float> ref = oracle.Logits(ids);
    ExpectClose(EngineLogits(*e32, ids), ref, "fp32 KV");
    ExpectClose(EngineLogits(*e16, ids), ref, "fp16 KV");
  }
}

TEST(OracleTest, LongPromptInSmallChunksMatchesTheReference) {
  // 300 tokens of the eval text in chunks of 64: many blocks, chunked prefill, split keys.
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path, "fp32", 64);
  ASSERT_TRUE(e);
  const std::vector<int32_t> ids = EvalTextTokens(e->tokenizer(), 300, false);
  Oracle oracle(path);
  ExpectClose(EngineLogits(*e, ids), oracle.Logits(ids), "300 tokens, chunks of 64");
}

// Gemma-3: MQA, head dim 256, sliding-window layers (window 512) beside global ones. A
// 700-token prompt in chunks of 256 makes the window layers drop blocks mid-prompt.
TEST(OracleTest, Gemma3LogitsMatchTheNumpyReference) {
  SLIMKV_REQUIRE_MODEL(path, "gemma-3-270m-q4_k_m.gguf");
  auto e32 = MakeEngine(path, "fp32", 256);
  auto e16 = MakeEngine(path, "fp16", 256);
  ASSERT_TRUE(e32 && e16);
  const std::vector<int32_t> ids = EvalTextTokens(e32->tokenizer(), 700, true);
  ASSERT_EQ(ids[0], e32->tokenizer().bos());
  Oracle oracle(path);
  const std::vector<float> ref = oracle.Logits(ids, 50);
  ExpectClose(EngineLogits(*e32, ids, 50), ref, "gemma3 fp32 KV, 700 tokens");
  ExpectClose(EngineLogits(*e16, ids, 50), ref, "gemma3 fp16 KV, 700 tokens");
}

TEST(OracleTest, Gemma3GreedyTokensAcrossTheWindowAreIdentical) {
  SLIMKV_REQUIRE_MODEL(path, "gemma-3-270m-q4_k_m.gguf");
  auto e = MakeEngine(path, "fp32", 512);
  ASSERT_TRUE(e);
  // 480 prompt tokens + 64 generated: decoding crosses the 512-token window.
  const std::vector<int32_t> ids = EvalTextTokens(e->tokenizer(), 480, true);
  Oracle oracle(path);
  EXPECT_EQ(GreedyTokens(*e, ids, 64), oracle.Greedy(ids, 64));
}

// Qwen2 (NEOX RoPE, Q/K/V biases): no Qwen2 file ships in a package, so the test rewrites
// SmolLM2 as an equivalent qwen2 GGUF with random biases (tools/oracle/validation) and
// checks the engine against the oracle on it.
TEST(OracleTest, Qwen2WithBiasesMatchesTheReference) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  if (std::getenv("SLIMKV_SANITIZED")) GTEST_SKIP() << "a 540 MB F32 model is too slow under sanitizers";
  const fs::path dir = fs::temp_directory_path() / fmt::format("slimkv_qwen2_{}", ::getpid());
  fs::create_directories(dir);
  const std::string qwen = (dir / "qwen2.gguf").string();
  std::string out;
  const std::string cmd = fmt::format("'{}' '{}/tools/oracle/validation/llama_as_qwen2.py' '{}' '{}' --bias-std 0.3 2>&1",
                                      testing::VenvPython(), testing::SourceDir(), path, qwen);
  ASSERT_EQ(testing::RunCommand(cmd, &out), 0) << out;
  {
    auto e = MakeEngine(qwen, "fp32", 512);
    ASSERT_TRUE(e);
    EXPECT_EQ(e->model().config().arch, "qwen2");
    EXPECT_TRUE(e->model().config().qkv_bias);
    const std::vector<int32_t> ids = EvalTextTokens(e->tokenizer(), 40, false);
    Oracle oracle(qwen);
    ExpectClose(EngineLogits(*e, ids), oracle.Logits(ids), "qwen2 with random QKV bias");
  }
  fs::remove_all(dir);
}

TEST(OracleTest, SixtyFourGreedyTokensAreIdentical) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path, "fp32", 512);
  ASSERT_TRUE(e);
  Oracle oracle(path);
  const auto prompts = Prompts(e->tokenizer());
  for (size_t i : {size_t{0}, size_t{2}}) {
    EXPECT_EQ(GreedyTokens(*e, prompts[i], 64), oracle.Greedy(prompts[i], 64)) << "prompt " << i;
  }
}

}  // namespace
}  // namespace slimkv
