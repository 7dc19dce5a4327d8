// Token ids equal llama.cpp's (an independent implementation) on every golden case, and on
// the whole eval text; the eval text also measures encoding speed.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace slimkv::tokenizer {
namespace {

using testing::CachedTokenizer;
using testing::GoldenCases;
using testing::IdsToString;

using testing::ModelCase;

class GoldenTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(GoldenTest, EveryCaseMatchesLlamaCpp) {
  SLIMKV_REQUIRE_MODEL(path, GetParam().file);
  const Tokenizer& tok = CachedTokenizer(path);
  const auto golden = testing::LoadGolden(std::string(GetParam().key) + ".json");
  ASSERT_EQ(golden.at("add_bos_default").get<bool>(), tok.add_bos_default());
  const auto cases = GoldenCases(golden);
  ASSERT_GE(cases.size(), 100u);
  int compared = 0, failed_in_llama_cpp = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(fmt::format("case '{}' (add_bos={}, parse_special={})", c.name, c.add_bos,
                             c.parse_special));
    const std::vector<TokenId> ids = tok.Encode(c.input, c.add_bos, c.parse_special);
    for (TokenId id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    if (c.llama_cpp_failed) {
      // llama.cpp aborts on these (a 4-byte form above U+10FFFF); slimkv reads each such
      // byte as U+FFFD, like any other invalid byte.
      ++failed_in_llama_cpp;
      std::vector<uint32_t> cpts;
      DecodeUtf8Lenient(c.input, &cpts);
      std::string replaced;
      for (uint32_t cpt : cpts) AppendUtf8(cpt, &replaced);
      EXPECT_NE(replaced.find("\xEF\xBF\xBD"), std::string::npos);
      EXPECT_EQ(ids, tok.Encode(replaced, c.add_bos, c.parse_special));
      std::printf("[ %s ] %s: llama.cpp aborts; slimkv gives %s\n", GetParam().key, c.name.c_str(),
                  IdsToString(ids).c_str());
      continue;
    }
    ++compared;
    if (ids != c.ids) {
      size_t first = 0;
      while (first < ids.size() && first < c.ids.size() && ids[first] == c.ids[first]) ++first;
      ADD_FAILURE() << "ids differ from llama.cpp at position " << first << "\n  slimkv:    "
                    << IdsToString(ids) << "\n  llama.cpp: " << IdsToString(c.ids);
    }
  }
  std::printf("[ %s ] %d cases compared with llama.cpp, %d where llama.cpp aborts\n",
              GetParam().key, compared, failed_in_llama_cpp);
}

TEST_P(GoldenTest, WholeEvalTextMatchesLlamaCppAndIsFast) {
  SLIMKV_REQUIRE_MODEL(path, GetParam().file);
  const std::string eval_path = std::string(std::getenv("SLIMKV_DATA_DIR") ? std::getenv("SLIMKV_DATA_DIR") : "data") + "/pg_essays.txt";
  if (!std::filesystem::exists(eval_path)) {
    if (::slimkv::testing::ModelsRequired()) FAIL() << "missing " << eval_path;
    GTEST_SKIP() << "missing " << eval_path;
  }
  const Tokenizer& tok = CachedTokenizer(path);
  const auto golden = testing::LoadGolden(std::string(GetParam().key) + ".json").at("eval_text");
  const std::string text = testing::ReadFile(eval_path);
  ASSERT_EQ(testing::Hex64(testing::Fnv1a(text.data(), text.size())), golden.at("fnv1a_bytes"))
      << "data/pg_essays.txt is not the text the golden file was made from";

  const auto start = std::chrono::steady_clock::now();
  const std::vector<TokenId> ids =
      tok.Encode(text, golden.at("add_bos").get<bool>(), golden.at("parse_special").get<bool>());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  EXPECT_EQ(ids.size(), golden.at("num_ids").get<size_t>());
  EXPECT_EQ(testing::Hex64(testing::Fnv1a(ids.data(), ids.size() * sizeof(TokenId))),
            golden.at("fnv1a_ids").get<std::string>());
  std::printf("[ %s ] eval text: %zu bytes -> %zu tokens in %.3f s (%.0f tokens/s, %.1f MB/s)\n",
              GetParam().key, text.size(), ids.size(), seconds, ids.size() / seconds,
              text.size() / seconds / 1e6);
  RecordProperty("tokens_per_second", static_cast<int>(ids.size() / seconds));
  // llama.cpp takes 0.2-1 s for this text; anything near quadratic would take minutes.
  EXPECT_LT(seconds, 5.0);
}

INSTANTIATE_TEST_SUITE_P(Models, GoldenTest,
                         ::testing::Values(ModelCase{"smollm2", testing::kSmolLm2File},
                                           ModelCase{"gemma3", testing::kGemma3File}),
                         [](const auto& info) { return std::string(info.param.key); });

}  // namespace
}  // namespace slimkv::tokenizer
