// StreamDecoder: text comes out only as whole UTF-8 characters, whatever the token
// boundaries; invalid bytes become U+FFFD.
#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace slimkv::tokenizer {
namespace {

using testing::CachedTokenizer;

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

// Pushes `ids` one at a time; every chunk must be valid UTF-8. Returns the chunks.
std::vector<std::string> Stream(const Tokenizer& tok, const std::vector<TokenId>& ids, bool flush = true) {
  StreamDecoder dec(tok);
  std::vector<std::string> chunks;
  for (TokenId id : ids) {
    chunks.push_back(dec.Push(id));
    EXPECT_TRUE(IsValidUtf8(chunks.back(), nullptr)) << "chunk " << chunks.size() - 1;
  }
  if (flush) chunks.push_back(dec.Flush());
  return chunks;
}

std::string Join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

TEST(StreamDecoderTest, EmojiSplitAcrossByteLevelTokens) {
  SLIMKV_REQUIRE_MODEL(path, testing::kSmolLm2File);
  const Tokenizer& tok = CachedTokenizer(path);
  for (const std::string text : {"\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7 family",  // ZWJ family
                                 "flag \xF0\x9F\x87\xBA\xF0\x9F\x87\xB8 and \xF0\x9F\x98\x80\xF0\x9F\x98\x83",
                                 "\xE6\xBC\xA2\xE5\xAD\x97 \xF0\xA0\x80\x80 mixed"}) {
    const auto ids = tok.Encode(text, false, false);
    const auto chunks = Stream(tok, ids);
    EXPECT_EQ(Join(chunks), text);
    // Some token ended inside a character, so its chunk was held back.
    bool held = false;
    for (size_t i = 0; i < ids.size(); ++i) held |= chunks[i].empty() && !tok.TokenToPiece(ids[i]).empty();
    EXPECT_TRUE(held) << text;
  }
}

TEST(StreamDecoderTest, ByteFallbackTokensAssembleOneCharacter) {
  SLIMKV_REQUIRE_MODEL(path, testing::kGemma3File);
  const Tokenizer& tok = CachedTokenizer(path);
  auto byte = [&](int b) { return tok.Find(fmt::format("<0x{:02X}>", b)); };
  // U+F0000 (private use) has no token: four byte tokens.
  const std::vector<TokenId> ids = {byte(0xF3), byte(0xB0), byte(0x80), byte(0x80)};
  EXPECT_EQ(tok.Encode("\xF3\xB0\x80\x80", false, false), ids);
  const auto chunks = Stream(tok, ids);
  EXPECT_EQ(chunks, (std::vector<std::string>{"", "", "", "\xF3\xB0\x80\x80", ""}));
}

TEST(StreamDecoderTest, InvalidBytesBecomeReplacementCharacters) {
  SLIMKV_REQUIRE_MODEL(path, testing::kGemma3File);
  const Tokenizer& tok = CachedTokenizer(path);
  auto byte = [&](int b) { return tok.Find(fmt::format("<0x{:02X}>", b)); };
  const TokenId a = tok.Encode("a", false, false).at(0);
  // A byte that never starts a character is replaced at once.
  EXPECT_EQ(Stream(tok, {byte(0xFF), a}), (std::vector<std::string>{std::string(kFffd), "a", ""}));
  // A lead byte followed by a non-continuation: one U+FFFD for the maximal valid prefix.
  EXPECT_EQ(Join(Stream(tok, {byte(0xE4), byte(0xB8), a})), std::string(kFffd) + "a");
  // Overlong and surrogate forms are invalid too.
  EXPECT_EQ(Join(Stream(tok, {byte(0xC0), byte(0xAF)})), std::string(kFffd) + std::string(kFffd));
  EXPECT_EQ(Join(Stream(tok, {byte(0xED), byte(0xA0), byte(0x80)})),
            std::string(kFffd) + std::string(kFffd) + std::string(kFffd));
  // A truncated character at the end is held until Flush, then replaced.
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.Push(a), "a");
  EXPECT_EQ(dec.Push(byte(0xF0)), "");
  EXPECT_EQ(dec.Push(byte(0x9F)), "");
  EXPECT_EQ(dec.Flush(), kFffd);
  EXPECT_EQ(dec.Flush(), "");
}

TEST(StreamDecoderTest, ControlTokensAreSilentUnlessRendered) {
  SLIMKV_REQUIRE_MODEL(path, testing::kGemma3File);
  const Tokenizer& tok = CachedTokenizer(path);
  StreamDecoder plain(tok);
  EXPECT_EQ(plain.Push(tok.eos()), "");
  EXPECT_EQ(plain.Push(tok.Find("<end_of_turn>")), "");
  StreamDecoder rendered(tok, /*render_special=*/true);
  EXPECT_EQ(rendered.Push(tok.Find("<end_of_turn>")), "<end_of_turn>");
  // User-defined tokens always render.
  EXPECT_EQ(plain.Push(tok.Find("<b>")), "<b>");
  EXPECT_EQ(plain.Push(-1), "");
  EXPECT_EQ(plain.Push(tok.vocab_size()), "");
}

TEST(StreamDecoderTest, StreamEqualsDecodeOnTheGoldenInputs) {
  for (const char* file : {testing::kSmolLm2File, testing::kGemma3File}) {
    auto path = ::slimkv::testing::ModelPath(file);
    if (!path) continue;
    const Tokenizer& tok = CachedTokenizer(*path);
    for (const auto& c : testing::GoldenCases(testing::LoadGolden(
             std::string(file) == testing::kSmolLm2File ? "smollm2.json" : "gemma3.json"))) {
      if (!IsValidUtf8(c.input, nullptr)) continue;
      const auto ids = tok.Encode(c.input, false, false);
      EXPECT_EQ(Join(Stream(tok, ids)), tok.Decode(ids)) << c.name;
    }
  }
}

}  // namespace
}  // namespace slimkv::tokenizer
