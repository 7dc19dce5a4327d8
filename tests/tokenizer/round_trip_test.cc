// Decode(Encode(text)) gives the text back: exactly for valid UTF-8, and for invalid UTF-8
// the bytes each tokenizer keeps (SentencePiece keeps them all as byte tokens; byte-level BPE
// sees llama.cpp's lenient decoding, so invalid bytes come back as U+FFFD).
#include <gtest/gtest.h>

#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace slimkv::tokenizer {
namespace {

using testing::CachedTokenizer;

std::string Canonical(std::string_view text) {
  std::vector<uint32_t> cpts;
  DecodeUtf8Lenient(text, &cpts);
  std::string out;
  for (uint32_t c : cpts) AppendUtf8(c, &out);
  return out;
}

// What a byte-level BPE vocabulary gives back: the canonical text without the bytes that
// have no token (SmolLM2 lacks 21 of the 256; llama.cpp drops them too).
std::string ByteLevelExpected(const Tokenizer& tok, std::string_view text) {
  std::string out;
  for (char c : Canonical(text)) {
    if (tok.Find(ByteLevelChar(static_cast<uint8_t>(c))) >= 0) out += c;
  }
  return out;
}

std::string SpacesForSpmSpaces(std::string text) {
  std::string out;
  for (size_t pos = 0; pos < text.size();) {
    if (text.compare(pos, 3, "\xE2\x96\x81") == 0) {
      out += ' ';
      pos += 3;
    } else {
      out += text[pos++];
    }
  }
  return out;
}

using testing::ModelCase;

class RoundTripTest : public ::testing::TestWithParam<ModelCase> {};

TEST_P(RoundTripTest, GoldenInputsRoundTrip) {
  SLIMKV_REQUIRE_MODEL(path, GetParam().file);
  const Tokenizer& tok = CachedTokenizer(path);
  int valid = 0, invalid = 0;
  for (const auto& c : testing::GoldenCases(testing::LoadGolden(std::string(GetParam().key) + ".json"))) {
    SCOPED_TRACE(c.name);
    const bool is_valid = IsValidUtf8(c.input, nullptr);
    // SentencePiece turns spaces into "▁" and every "▁" back into a space. With invalid
    // UTF-8 a lead byte claims the bytes after it whatever they are (as in llama.cpp), so an
    // escaped space it claims comes back as the bytes of "▁": compare modulo that.
    const bool spm = tok.kind() == Kind::kSpm;
    const std::string expected = spm ? SpacesForSpmSpaces(c.input) : ByteLevelExpected(tok, c.input);
    auto normalize = [&](std::string decoded) {
      return spm && !is_valid ? SpacesForSpmSpaces(std::move(decoded)) : decoded;
    };
    // Special token texts as plain text, then as special tokens rendered back.
    EXPECT_EQ(normalize(tok.Decode(tok.Encode(c.input, false, false))), expected);
    EXPECT_EQ(normalize(tok.Decode(tok.Encode(c.input, false, true), /*render_special=*/true)), expected);
    // A leading BOS decodes to nothing.
    EXPECT_EQ(normalize(tok.Decode(tok.Encode(c.input, true, false))), expected);
    (is_valid ? valid : invalid)++;
  }
  std::printf("[ %s ] round trips: %d valid UTF-8 inputs, %d invalid\n", GetParam().key, valid, invalid);
}

// The llama.cpp quirk behind the normalisation above, spelled out.
TEST(RoundTripSpmTest, LeadByteClaimsAnEscapedSpace) {
  SLIMKV_REQUIRE_MODEL(path, testing::kGemma3File);
  const Tokenizer& tok = CachedTokenizer(path);
  // "\xF0" claims 4 bytes: F0 9F 98 and the first byte of "▁" (E2 96 81); all become byte
  // tokens, and "end" no longer has its space.
  const auto ids = tok.Encode("\xF0\x9F\x98 end", false, false);
  EXPECT_EQ(tok.Decode(ids), "\xF0\x9F\x98\xE2\x96\x81" "end");
  EXPECT_EQ(tok.TokenToPiece(ids[0]), "\xF0");
  // ASCII after a lead byte becomes byte tokens too: "a\xE4b" -> a <0xE4> <0x62>.
  EXPECT_EQ(tok.Encode("a\xE4" "b", false, false),
            (std::vector<TokenId>{tok.Find("a"), tok.Find("<0xE4>"), tok.Find("<0x62>")}));
}

TEST_P(RoundTripTest, PiecesConcatenateToDecode) {
  SLIMKV_REQUIRE_MODEL(path, GetParam().file);
  const Tokenizer& tok = CachedTokenizer(path);
  const auto ids = tok.Encode("Hello, world! \xF0\x9F\x98\x80 caf\xC3\xA9", false, false);
  std::string joined;
  for (TokenId id : ids) joined += tok.TokenToPiece(id);
  EXPECT_EQ(joined, tok.Decode(ids));
  EXPECT_EQ(tok.TokenToPiece(-5), "");
  EXPECT_EQ(tok.TokenToPiece(tok.vocab_size()), "");
  EXPECT_EQ(tok.Decode(std::vector<TokenId>{-1, tok.vocab_size() + 7}), "");
}

INSTANTIATE_TEST_SUITE_P(Models, RoundTripTest,
                         ::testing::Values(ModelCase{"smollm2", testing::kSmolLm2File},
                                           ModelCase{"gemma3", testing::kGemma3File}),
                         [](const auto& info) { return std::string(info.param.key); });

TEST(TokenizerModelTest, SpecialIdsAndEndOfGeneration) {
  SLIMKV_REQUIRE_MODEL(smol_path, testing::kSmolLm2File);
  const Tokenizer& smol = CachedTokenizer(smol_path);
  EXPECT_EQ(smol.kind(), Kind::kBpe);
  EXPECT_EQ(smol.vocab_size(), 49152);
  EXPECT_EQ(smol.bos(), 1);
  EXPECT_EQ(smol.eos(), 2);
  EXPECT_FALSE(smol.add_bos_default());
  EXPECT_EQ(smol.TokenText(1), "<|im_start|>");
  EXPECT_EQ(smol.GetTokenType(2), TokenType::kControl);
  EXPECT_TRUE(smol.IsEndOfGeneration(smol.Find("<|im_end|>")));
  EXPECT_TRUE(smol.IsEndOfGeneration(smol.Find("<|endoftext|>")));
  EXPECT_TRUE(smol.IsEndOfGeneration(smol.Find("<reponame>")));  // llama.cpp's FIM repo token
  EXPECT_FALSE(smol.IsEndOfGeneration(smol.Find("<|im_start|>")));
  EXPECT_FALSE(smol.IsEndOfGeneration(smol.Encode("Hello", false, false)[0]));
  EXPECT_EQ(smol.Encode("<|im_start|>", false, true), std::vector<TokenId>{1});

  SLIMKV_REQUIRE_MODEL(gemma_path, testing::kGemma3File);
  const Tokenizer& gemma = CachedTokenizer(gemma_path);
  EXPECT_EQ(gemma.kind(), Kind::kSpm);
  EXPECT_EQ(gemma.vocab_size(), 262144);
  EXPECT_EQ(gemma.bos(), 2);
  EXPECT_EQ(gemma.eos(), 1);
  EXPECT_TRUE(gemma.add_bos_default());
  EXPECT_EQ(gemma.eot(), gemma.Find("<end_of_turn>"));
  EXPECT_TRUE(gemma.IsEndOfGeneration(gemma.Find("<end_of_turn>")));
  EXPECT_TRUE(gemma.IsEndOfGeneration(gemma.Find("<eos>")));
  EXPECT_TRUE(gemma.IsEndOfGeneration(gemma.Find("</s>")));  // llama.cpp's text rule, kept
  EXPECT_FALSE(gemma.IsEndOfGeneration(gemma.Find("<start_of_turn>")));
  EXPECT_EQ(gemma.Encode("", true, true), std::vector<TokenId>{2});
  EXPECT_EQ(gemma.TokenToPiece(gemma.Find("\xE2\x96\x81the")), " the");
  EXPECT_EQ(gemma.TokenToPiece(gemma.Find("<0x41>")), "A");
}

}  // namespace
}  // namespace slimkv::tokenizer
