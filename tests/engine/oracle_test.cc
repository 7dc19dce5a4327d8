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
#include "kv/format.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace slimkv {
namespace {

namespace fs = std::filesystem;

// The bound: max |ours - oracle| <= 1e-3 of the oracle's logit range.
constexpr double kMaxErrorOfRange = 1e-3;

std::string Join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t t : ids) s += (s.empty() ? "" : ",") + std::to_string(t);
  return s;
}

class Oracle {
 public:
  explicit Oracle(std::string model) : model_(std::move(model)) {
    dir_ = fs::temp_directory_path() / fmt::format("slimkv_oracle_{}", ::getpid());
    fs::create_directories(dir_);
  }
  ~Oracle() { fs::remove_all(dir_); }

  // Logits of rows 0, every, 2*every, ... and the last.
  std::vector<float> Logits(const std::vector<int32_t>& ids, int every = 1) {
    const fs::path out = dir_ / "logits.bin";
    if (!Run(fmt::format("logits --model '{}' --tokens {} --every {} --out '{}'", model_, Join(ids), every,
                         out.string()))) {
      return {};
    }
    std::ifstream in(out, std::ios::binary);
    std::vector<float> v(fs::file_size(out) / 4);
    in.read(reinterpret_cast<char*>(v.data()), v.size() * 4);
    return v;
  }
  std::vector<int32_t> Greedy(const std::vector<int32_t>& ids, int n) {
    const fs::path out = dir_ / "greedy.json";
    if (!Run(fmt::format("greedy --model '{}' --tokens {} -n {} --out '{}'", model_, Join(ids), n, out.string()))) return {};
    std::ifstream in(out);
    const nlohmann::json j = nlohmann::json::parse(in);
    const auto& arr = j.is_array() ? j : j.at("tokens");
    return arr.get<std::vector<int32_t>>();
  }

 private:
  bool Run(const std::string& args) {
    const std::string cmd = fmt::format("'{}' '{}/tools/oracle/reference.py' {} 2>&1", testing::VenvPython(),
                                        testing::SourceDir(), args);
    std::string out;
    const int rc = testing::RunCommand(cmd, &out);
    EXPECT_EQ(rc, 0) << cmd << "\n" << out;
    return rc == 0;
  }
  std::string model_;
  fs::path dir_;
};

std::unique_ptr<engine::Engine> MakeEngine(const std::string& path, const char* kv, int batch) {
  return testing::MakeTestEngine(path, {.kv = kv, .n_ctx = 1024, .n_seq = 1, .prefill_chunk = batch});
}

std::vector<float> EngineLogits(engine::Engine& e, const std::vector<int32_t>& ids, int every = 1) {
  const kv::SeqId s = e.kv().AddSequence();
  std::vector<float> logits;
  const Status st = e.Prefill(s, ids, 0, &logits);
  EXPECT_TRUE(st.ok()) << st.ToString();
  e.kv().RemoveSequence(s);
  if (every <= 1) return logits;
  const size_t V = e.model().config().n_vocab;
  std::vector<float> rows;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i % every == 0 || i + 1 == ids.size()) rows.insert(rows.end(), logits.begin() + i * V, logits.begin() + (i + 1) * V);
  }
  return rows;
}

std::vector<int32_t> EvalTextTokens(const tokenizer::Tokenizer& tok, size_t n, bool bos) {
  std::ifstream in(testing::SourceDir() + "/data/pg_essays.txt");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_GT(text.size(), 20000u) << "data/pg_essays.txt missing (make setup writes it)";
  std::vector<int32_t> ids = tok.Encode(text.substr(0, 20000), bos, false);
  ids.resize(std::min(ids.size(), n));
  return ids;
}

std::vector<int32_t> GreedyTokens(engine::Engine& e, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> got;
  engine::GenerateOptions go;
  go.max_tokens = n;
  go.sampling.temperature = 0;
  go.stop_at_end_of_generation = false;
  auto st = e.Generate(prompt, go, [&](int32_t t, const std::string&) {
    if (t >= 0) got.push_back(t);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  return got;
}

void ExpectClose(const std::vector<float>& ours, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  float lo = ref[0], hi = ref[0];
  for (float v : ref) lo = std::min(lo, v), hi = std::max(hi, v);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max<double>(worst, std::abs(ours[i] - ref[i]));
  const double ratio = worst / (hi - lo);
  std::printf("[%s] max |error| %.3g over a logit range of %.3g: %.2e of the range\n", what, worst, hi - lo, ratio);
  EXPECT_LE(ratio, kMaxErrorOfRange) << what;
}

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
