// Vocabularies that are missing keys or contradict themselves give a Status naming the key,
// never a crash; a tiny valid vocabulary of each kind tokenizes as expected.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "gguf/gguf_file.h"
#include "gguf/gguf_writer.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::tokenizer {
namespace {

using gguf::testing::GgufWriter;
using gguf::testing::Value;

constexpr uint32_t kString = 8, kInt32 = 5, kFloat32 = 6;

Value Strings(const std::vector<std::string>& items) {
  std::vector<Value> v;
  for (const auto& s : items) v.push_back(Value::String(s));
  return Value::Array(kString, v);
}
Value Int32s(const std::vector<int32_t>& items) {
  std::vector<Value> v;
  for (int32_t x : items) v.push_back(Value::I32(x));
  return Value::Array(kInt32, v);
}
Value Floats(const std::vector<float>& items) {
  std::vector<Value> v;
  for (float x : items) v.push_back(Value::F32(x));
  return Value::Array(kFloat32, v);
}

// A byte-level BPE vocabulary: "a", "b", "c", "ab", "abc", " " as "Ġ", "Ġa", a control token.
struct BpeSpec {
  std::optional<std::string> model = "gpt2";
  std::optional<std::string> pre = "gpt-2";
  std::optional<std::vector<std::string>> tokens =
      std::vector<std::string>{"<|end|>", "a", "b", "c", "ab", "abc", "\xC4\xA0", "\xC4\xA0" "a"};
  std::optional<std::vector<int32_t>> types = std::vector<int32_t>{3, 1, 1, 1, 1, 1, 1, 1};
  std::optional<std::vector<std::string>> merges = std::vector<std::string>{"a b", "ab c", "\xC4\xA0 a"};
  std::vector<std::pair<std::string, Value>> extra;

  std::vector<uint8_t> Build() const {
    GgufWriter w;
    if (model) w.Kv("tokenizer.ggml.model", Value::String(*model));
    if (pre) w.Kv("tokenizer.ggml.pre", Value::String(*pre));
    if (tokens) w.Kv("tokenizer.ggml.tokens", Strings(*tokens));
    if (types) w.Kv("tokenizer.ggml.token_type", Int32s(*types));
    if (merges) w.Kv("tokenizer.ggml.merges", Strings(*merges));
    for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"}) {
      const bool overridden =
          std::any_of(extra.begin(), extra.end(), [&](const auto& kv) { return kv.first == key; });
      if (!overridden) w.Kv(key, Value::U32(0));
    }
    for (const auto& [k, v] : extra) w.Kv(k, v);
    return w.Build();
  }
};

Result<std::unique_ptr<Tokenizer>> Load(const std::vector<uint8_t>& image) {
  auto file = gguf::GgufFile::FromBytes(image, "vocab.gguf");
  if (!file.ok()) return file.status();
  return Tokenizer::FromGguf(*file);
}

// Expects an error of `code` whose message contains every one of `parts`.
void ExpectError(const Result<std::unique_ptr<Tokenizer>>& r, StatusCode code,
                 std::initializer_list<std::string_view> parts) {
  ASSERT_FALSE(r.ok()) << "loaded a bad vocabulary";
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  for (std::string_view p : parts) {
    EXPECT_NE(r.status().message().find(p), std::string::npos)
        << "'" << p << "' not in: " << r.status().message();
  }
}

TEST(MalformedVocabTest, TinyBpeVocabularyWorks) {
  auto tok = Load(BpeSpec{}.Build());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->Encode("abc", false, false), (std::vector<TokenId>{5}));
  EXPECT_EQ((*tok)->Encode("ab a", false, false), (std::vector<TokenId>{4, 7}));
  EXPECT_EQ((*tok)->Encode("ba", false, false), (std::vector<TokenId>{2, 1}));
  EXPECT_EQ((*tok)->Encode("<|end|>a", false, true), (std::vector<TokenId>{0, 1}));
  // Bytes with no token are dropped, as llama.cpp drops them.
  EXPECT_EQ((*tok)->Encode("zaz", false, false), (std::vector<TokenId>{1}));
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("ab a", false, false)), "ab a");
}

TEST(MalformedVocabTest, MissingKeys) {
  BpeSpec s;
  s.model.reset();
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"vocab.gguf", "tokenizer.ggml.model"});
  s = BpeSpec{};
  s.tokens.reset();
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.tokens"});
  s = BpeSpec{};
  s.merges.reset();
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges"});
  s = BpeSpec{};
  s.tokens = std::vector<std::string>{};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.tokens"});
}

TEST(MalformedVocabTest, UnsupportedKinds) {
  BpeSpec s;
  s.model = "t5";
  ExpectError(Load(s.Build()), StatusCode::kUnimplemented, {"tokenizer.ggml.model", "t5"});
  s = BpeSpec{};
  s.pre = "no-such-pre";
  ExpectError(Load(s.Build()), StatusCode::kUnimplemented, {"no-such-pre"});
}

TEST(MalformedVocabTest, BadMerges) {
  BpeSpec s;
  s.merges = std::vector<std::string>{"a b", "a z"};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges[1]", "'z'"});
  s.merges = std::vector<std::string>{"b a"};  // "ba" is not a token
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges[0]", "'ba'"});
  s.merges = std::vector<std::string>{"ab"};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges[0]", "left right"});
  s.merges = std::vector<std::string>{""};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges[0]"});
  GgufWriter w;  // merges of the wrong element type
  w.Kv("tokenizer.ggml.model", Value::String("gpt2"))
      .Kv("tokenizer.ggml.tokens", Strings({"a", "b", "ab"}))
      .Kv("tokenizer.ggml.merges", Int32s({1, 2}));
  ExpectError(Load(w.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.merges[0]"});
}

TEST(MalformedVocabTest, InconsistentArrays) {
  BpeSpec s;
  s.types = std::vector<int32_t>{3, 1};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.token_type", "2 entries"});
  s = BpeSpec{};
  s.extra.push_back({"tokenizer.ggml.scores", Floats({0.f, 1.f})});
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.scores"});
  s = BpeSpec{};
  s.extra.push_back({"tokenizer.ggml.scores", Floats(std::vector<float>(8, std::nanf("")))});
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.scores[0]"});
  s = BpeSpec{};
  s.tokens = std::vector<std::string>{"<|end|>", "a", "b", "c", "ab", "abc", "a", "\xC4\xA0" "a"};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.tokens[6]", "token 1"});
  GgufWriter w;  // tokens that are not strings
  w.Kv("tokenizer.ggml.model", Value::String("llama")).Kv("tokenizer.ggml.tokens", Int32s({1, 2, 3}));
  ExpectError(Load(w.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.tokens[0]"});
  GgufWriter w2;  // a scalar where an array belongs
  w2.Kv("tokenizer.ggml.model", Value::String("llama"))
      .Kv("tokenizer.ggml.tokens", Strings({"a"}))
      .Kv("tokenizer.ggml.scores", Value::F32(1.0f));
  ExpectError(Load(w2.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.scores"});
}

TEST(MalformedVocabTest, SpecialIdsOutOfRange) {
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.eot_token_id"}) {
    BpeSpec s;
    s.extra.push_back({key, Value::U32(8)});
    ExpectError(Load(s.Build()), StatusCode::kDataLoss, {key, "8", "[0, 8)"});
    s.extra.back().second = Value::I32(-7);
    ExpectError(Load(s.Build()), StatusCode::kDataLoss, {key, "-7"});
    s.extra.back().second = Value::String("1");
    ExpectError(Load(s.Build()), StatusCode::kDataLoss, {key});
  }
  // Ids llama.cpp only warns about stay warnings.
  BpeSpec s;
  s.extra.push_back({"tokenizer.ggml.padding_token_id", Value::U32(1000)});
  EXPECT_TRUE(Load(s.Build()).ok());
  s.extra.back() = {"tokenizer.ggml.add_bos_token", Value::String("yes")};
  ExpectError(Load(s.Build()), StatusCode::kDataLoss, {"tokenizer.ggml.add_bos_token"});
}

// A SentencePiece vocabulary: <unk> <s> </s>, "▁", letters, merges by score, byte tokens for
// only some bytes.
std::vector<uint8_t> SpmImage(bool with_byte_tokens) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a",
                                     "ab", "\xE2\x96\x81" "ab"};
  std::vector<float> scores = {0, 0, 0, -1, -2, -2, -3, -4, -1};
  std::vector<int32_t> types = {2, 3, 3, 1, 1, 1, 1, 1, 1};
  if (with_byte_tokens) {
    for (int b : {0x63, 0xE4}) {
      tokens.push_back(fmt::format("<0x{:02X}>", b));
      scores.push_back(0);
      types.push_back(6);
    }
  }
  GgufWriter w;
  w.Kv("tokenizer.ggml.model", Value::String("llama"))
      .Kv("tokenizer.ggml.tokens", Strings(tokens))
      .Kv("tokenizer.ggml.scores", Floats(scores))
      .Kv("tokenizer.ggml.token_type", Int32s(types));
  return w.Build();
}

TEST(MalformedVocabTest, TinySpmVocabularyWorks) {
  auto tok = Load(SpmImage(true));
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const Tokenizer& t = **tok;
  EXPECT_TRUE(t.add_bos_default());  // SentencePiece default, as llama.cpp
  EXPECT_EQ(t.bos(), 1);
  EXPECT_EQ(t.eos(), 2);
  // Space prefix, "▁ab" wins (score -1) over "ab" and "▁a".
  EXPECT_EQ(t.Encode("ab", true, false), (std::vector<TokenId>{1, 8}));
  EXPECT_EQ(t.Decode(t.Encode("ab", true, false)), "ab");
  // "c" falls back to its byte token; "d" has none and becomes <unk> (llama.cpp throws).
  EXPECT_EQ(t.Encode("c d", false, false), (std::vector<TokenId>{3, 9, 3, 0}));
  EXPECT_EQ(t.Encode("<s>a", false, true), (std::vector<TokenId>{1, 6}));
  EXPECT_EQ(t.TokenToPiece(9), "c");
}

TEST(MalformedVocabTest, SpmWithoutByteTokensDoesNotCrash) {
  auto tok = Load(SpmImage(false));
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const auto ids = (*tok)->Encode("\xFF\xE4 xyz \xF0\x9F\x98\x80", false, false);
  for (TokenId id : ids) EXPECT_TRUE(id >= 0 && id < (*tok)->vocab_size());
}

// Random byte changes to a valid vocabulary either fail to load with a Status or give a
// tokenizer that encodes and decodes arbitrary bytes (run under ASan to mean something).
TEST(MalformedVocabTest, MutatedImagesNeverCrash) {
  const std::vector<uint8_t> images[] = {BpeSpec{}.Build(), SpmImage(true)};
  std::mt19937 rng(1234);
  int loaded = 0, rejected = 0;
  for (const auto& base : images) {
    for (int trial = 0; trial < 400; ++trial) {
      std::vector<uint8_t> img = base;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) img[rng() % img.size()] = static_cast<uint8_t>(rng());
      auto tok = Load(img);
      if (!tok.ok()) {
        ++rejected;
        continue;
      }
      ++loaded;
      std::string text;
      for (int i = 0; i < 40; ++i) text.push_back(static_cast<char>(rng()));
      const auto ids = (*tok)->Encode(text, true, trial % 2 == 0);
      for (TokenId id : ids) ASSERT_TRUE(id >= 0 && id < (*tok)->vocab_size());
      (*tok)->Decode(ids);
    }
  }
  std::printf("[ mutations ] %d loaded, %d rejected\n", loaded, rejected);
  EXPECT_GT(loaded, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace slimkv::tokenizer
