// The float64 numpy oracle (tools/oracle/reference.py) run from a test, and the comparisons
// the oracle tests make: logits within 1e-3 of the oracle's logit range, greedy tokens equal.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine_test_util.h"
#include "test_util.h"

namespace slimkv::testing {

namespace oracle_fs = std::filesystem;

// The bound: max |ours - oracle| <= 1e-3 of the oracle's logit range.
inline constexpr double kMaxErrorOfRange = 1e-3;

inline std::string Join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t t : ids) s += (s.empty() ? "" : ",") + std::to_string(t);
  return s;
}

class Oracle {
 public:
  // `extra`: options every command gets (e.g. "--n-ctx 64").
  explicit Oracle(std::string model, std::string extra = "")
      : model_(std::move(model)), extra_(std::move(extra)) {
    dir_ = oracle_fs::temp_directory_path() / fmt::format("slimkv_oracle_{}", ::getpid());
    oracle_fs::create_directories(dir_);
  }
  ~Oracle() { oracle_fs::remove_all(dir_); }

  // Logits of rows 0, every, 2*every, ... and the last.
  std::vector<float> Logits(const std::vector<int32_t>& ids, int every = 1) {
    const oracle_fs::path out = dir_ / "logits.bin";
    if (!Run(fmt::format("logits --model '{}' --tokens {} --every {} --out '{}'", model_, Join(ids), every,
                         out.string()))) {
      return {};
    }
    std::ifstream in(out, std::ios::binary);
    std::vector<float> v(oracle_fs::file_size(out) / 4);
    in.read(reinterpret_cast<char*>(v.data()), v.size() * 4);
    return v;
  }
  std::vector<int32_t> Greedy(const std::vector<int32_t>& ids, int n) {
    const oracle_fs::path out = dir_ / "greedy.json";
    if (!Run(fmt::format("greedy --model '{}' --tokens {} -n {} --out '{}'", model_, Join(ids), n,
                         out.string())))
      return {};
    std::ifstream in(out);
    const nlohmann::json j = nlohmann::json::parse(in);
    const auto& arr = j.is_array() ? j : j.at("tokens");
    return arr.get<std::vector<int32_t>>();
  }

 private:
  bool Run(const std::string& args) {
    const std::string cmd = fmt::format("'{}' '{}/tools/oracle/reference.py' {} {} 2>&1",
                                        testing::VenvPython(), testing::SourceDir(), args, extra_);
    std::string out;
    const int rc = testing::RunCommand(cmd, &out);
    EXPECT_EQ(rc, 0) << cmd << "\n" << out;
    return rc == 0;
  }
  std::string model_, extra_;
  oracle_fs::path dir_;
};

inline std::unique_ptr<engine::Engine> MakeEngine(const std::string& path, const char* kv, int batch) {
  return testing::MakeTestEngine(path, {.kv = kv, .n_ctx = 1024, .n_seq = 1, .prefill_chunk = batch});
}

inline std::vector<float> EngineLogits(engine::Engine& e, const std::vector<int32_t>& ids, int every = 1) {
  const kv::SeqId s = e.kv().AddSequence();
  std::vector<float> logits;
  const Status st = e.Prefill(s, ids, 0, &logits);
  EXPECT_TRUE(st.ok()) << st.ToString();
  e.kv().RemoveSequence(s);
  if (every <= 1) return logits;
  const size_t V = e.model().config().n_vocab;
  std::vector<float> rows;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i % every == 0 || i + 1 == ids.size())
      rows.insert(rows.end(), logits.begin() + i * V, logits.begin() + (i + 1) * V);
  }
  return rows;
}

inline std::vector<int32_t> EvalTextTokens(const tokenizer::Tokenizer& tok, size_t n, bool bos) {
  std::ifstream in(testing::SourceDir() + "/data/pg_essays.txt");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_GT(text.size(), 20000u) << "data/pg_essays.txt missing (make setup writes it)";
  std::vector<int32_t> ids = tok.Encode(text.substr(0, 20000), bos, false);
  ids.resize(std::min(ids.size(), n));
  return ids;
}

inline std::vector<int32_t> GreedyTokens(engine::Engine& e, const std::vector<int32_t>& prompt, int n) {
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

inline void ExpectClose(const std::vector<float>& ours, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(ours.size(), ref.size()) << what;
  float lo = ref[0], hi = ref[0];
  for (float v : ref) lo = std::min(lo, v), hi = std::max(hi, v);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max<double>(worst, std::abs(ours[i] - ref[i]));
  const double ratio = worst / (hi - lo);
  std::printf("[%s] max |error| %.3g over a logit range of %.3g: %.2e of the range\n", what, worst, hi - lo,
              ratio);
  EXPECT_LE(ratio, kMaxErrorOfRange) << what;
}

}  // namespace slimkv::testing
