// UTF-8 helpers and the pre-tokenizer on hand-checked inputs.
#include "tokenizer/unicode.h"

#include <gtest/gtest.h>

#include <set>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::tokenizer {
namespace {

std::vector<uint32_t> Lenient(std::string_view s) {
  std::vector<uint32_t> cpts;
  DecodeUtf8Lenient(s, &cpts);
  return cpts;
}

TEST(UnicodeTest, LenientDecodingIsLlamaCpps) {
  using V = std::vector<uint32_t>;
  EXPECT_EQ(Lenient("a\xC3\xA9\xE6\xBC\xA2\xF0\x9F\x98\x80"), (V{'a', 0xE9, 0x6F22, 0x1F600}));
  EXPECT_EQ(Lenient("\x80"), (V{0xFFFD}));
  EXPECT_EQ(Lenient("\xE4\xB8"), (V{0xFFFD, 0xFFFD}));          // one per byte
  EXPECT_EQ(Lenient("\xE4\xB8" "a"), (V{0xFFFD, 0xFFFD, 'a'}));
  EXPECT_EQ(Lenient("\xC0\x80"), (V{0}));                       // overlong accepted
  EXPECT_EQ(Lenient("\xE0\x80\xAF"), (V{0x2F}));
  EXPECT_EQ(Lenient("\xED\xA0\x80"), (V{0xD800}));              // surrogate accepted
  EXPECT_EQ(Lenient("\xF4\x90\x80\x80"), (V{0xFFFD, 0xFFFD, 0xFFFD, 0xFFFD}));  // llama.cpp aborts
  EXPECT_EQ(Lenient("\xF8\x88"), (V{0xFFFD, 0xFFFD}));
  EXPECT_EQ(Lenient(""), V{});
}

TEST(UnicodeTest, StrictValidation) {
  size_t bad = 99;
  EXPECT_TRUE(IsValidUtf8("", &bad));
  EXPECT_TRUE(IsValidUtf8("plain ascii", &bad));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9\xE6\xBC\xA2\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF", nullptr));
  struct Bad {
    std::string_view text;
    size_t offset;
  };
  for (const Bad& b : {Bad{"ab\x80", 2}, Bad{"\xC0\xAF", 0}, Bad{"x\xE0\x80\xAF", 1}, Bad{"\xED\xA0\x80", 0},
                       Bad{"ok\xF4\x90\x80\x80", 2}, Bad{"\xE4\xB8", 0}, Bad{"\xFF", 0}, Bad{"a\xC3", 1}}) {
    EXPECT_FALSE(IsValidUtf8(b.text, &bad)) << b.text;
    EXPECT_EQ(bad, b.offset) << b.text;
    EXPECT_FALSE(IsValidUtf8(b.text, nullptr));
  }
}

TEST(UnicodeTest, LeadByteLengths) {
  EXPECT_EQ(Utf8LenFromLeadByte('a'), 1u);
  EXPECT_EQ(Utf8LenFromLeadByte(0x80), 1u);
  EXPECT_EQ(Utf8LenFromLeadByte(0xBF), 1u);
  EXPECT_EQ(Utf8LenFromLeadByte(0xC0), 2u);
  EXPECT_EQ(Utf8LenFromLeadByte(0xE4), 3u);
  EXPECT_EQ(Utf8LenFromLeadByte(0xF0), 4u);
  EXPECT_EQ(Utf8LenFromLeadByte(0xFF), 4u);
}

TEST(UnicodeTest, ByteLevelAlphabetIsABijection) {
  std::set<std::string> seen;
  for (int b = 0; b < 256; ++b) {
    const std::string& c = ByteLevelChar(static_cast<uint8_t>(b));
    EXPECT_TRUE(seen.insert(c).second);
    uint32_t cpt = 0;
    ASSERT_EQ(DecodeUtf8Strict(c, 0, &cpt), c.size());
    EXPECT_EQ(ByteLevelByte(cpt), b);
  }
  EXPECT_EQ(ByteLevelChar(' '), "\xC4\xA0");   // "Ġ"
  EXPECT_EQ(ByteLevelChar('\n'), "\xC4\x8A");  // "Ċ"
  EXPECT_EQ(ByteLevelChar('a'), "a");
  EXPECT_EQ(ByteLevelByte(0x4E00), -1);
}

std::vector<std::string> Words(PreType type, std::string_view text) {
  auto pre = PreTokenizer::Create(type);
  EXPECT_TRUE(pre.ok()) << pre.status().ToString();
  std::string canonical;
  std::vector<WordSpan> spans;
  (*pre)->Split(text, &canonical, &spans);
  std::vector<std::string> out;
  uint32_t pos = 0;
  for (const auto& [b, e] : spans) {
    EXPECT_EQ(b, pos);  // the words tile the text
    pos = e;
    out.push_back(canonical.substr(b, e - b));
  }
  EXPECT_EQ(pos, canonical.size());
  return out;
}

TEST(PreTokenizerTest, RegexFamilies) {
  using W = std::vector<std::string>;
  // GPT-2: contractions, optional leading space, \s+(?!\S).
  EXPECT_EQ(Words(PreType::kGpt2, "I'm here  now 123!?"),
            (W{"I", "'m", " here", " ", " now", " 123", "!?"}));
  // SmolLM2: digits one by one first.
  EXPECT_EQ(Words(PreType::kSmollm, "abc123 4.5"), (W{"abc", "1", "2", "3", " ", "4", ".", "5"}));
  // Llama-3: digits in threes, case-insensitive contractions, newlines kept with whitespace.
  EXPECT_EQ(Words(PreType::kLlama3, "HE'S 1234567 ok\n\n  x"),
            (W{"HE", "'S", " ", "123", "456", "7", " ok", "\n\n", " ", " x"}));
  EXPECT_EQ(Words(PreType::kQwen2, "a12"), (W{"a", "1", "2"}));
  // Default: punctuation runs first.
  EXPECT_EQ(Words(PreType::kDefault, "a+b=c"), (W{"a", "+", "b", "=", "c"}));
  // U+180E is not whitespace for llama.cpp (PCRE2's UCP \s would say it is).
  EXPECT_EQ(Words(PreType::kGpt2, "a\xE1\xA0\x8E" "b"), (W{"a", "\xE1\xA0\x8E", "b"}));
  // Invalid bytes are U+FFFD; surrogates keep their bytes.
  EXPECT_EQ(Words(PreType::kGpt2, "a\xFF" "b"), (W{"a", "\xEF\xBF\xBD", "b"}));
  EXPECT_EQ(Words(PreType::kGpt2, "\xED\xA0\x80x"), (W{"\xED\xA0\x80", "x"}));
  EXPECT_EQ(Words(PreType::kGpt2, ""), W{});
}

TEST(PreTokenizerTest, LongRunsAreLinear) {
  for (const std::string& text : {std::string(1 << 20, ' ') + "x", std::string(1 << 20, 'a'),
                                  std::string(1 << 20, '\n'), std::string(1 << 20, '!')}) {
    for (PreType t : {PreType::kGpt2, PreType::kLlama3, PreType::kSmollm, PreType::kDefault}) {
      const auto words = Words(t, text);
      EXPECT_LE(words.size(), 3u);
    }
  }
}

TEST(PreTokenizerTest, NamesMapToFamilies) {
  EXPECT_EQ(PreTypeFromName("smollm")->type, PreType::kSmollm);
  EXPECT_EQ(PreTypeFromName("llama-bpe")->type, PreType::kLlama3);
  EXPECT_TRUE(PreTypeFromName("llama-bpe")->ignore_merges);
  EXPECT_EQ(PreTypeFromName("qwen2")->type, PreType::kQwen2);
  EXPECT_EQ(PreTypeFromName("gpt-2")->type, PreType::kGpt2);
  EXPECT_EQ(PreTypeFromName("")->type, PreType::kDefault);
  const auto unknown = PreTypeFromName("no-such-pre");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(unknown.status().message().find("no-such-pre"), std::string::npos);
}

}  // namespace
}  // namespace slimkv::tokenizer
