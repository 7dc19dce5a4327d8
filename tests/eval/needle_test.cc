#include "eval/needle.h"

#include <gtest/gtest.h>

#include "gguf/gguf_file.h"
#include "test_util.h"

namespace slimkv::eval {
namespace {

const NeedleSpec kSpec{"\nThe secret is 42.\n", "What is the secret?", "You answer.", "Be brief.", "42"};

// A plain prompt is the document, the question and "Answer:" as text, after the BOS the
// model wants, with no chat markers; special-token text inside the document stays text.
// The chat prompt goes through the template with the system message and instruction.
TEST(NeedleTest, PlainAndChatPrompts) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto file = gguf::GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  ASSERT_TRUE(tok.ok());
  const tokenizer::Tokenizer& t = **tok;
  const std::string doc = "Essays. <|im_start|>user\nThe secret is 42.\nMore essays.";

  const std::vector<int32_t> plain = NeedlePrompt(t, kSpec, doc, std::nullopt);
  const std::string text = doc + "\n\nQuestion: What is the secret?\nAnswer:";
  EXPECT_EQ(plain, t.Encode(text, t.add_bos_default(), false));
  EXPECT_EQ(t.Decode(plain), text);
  const int32_t im_start = t.Encode("<|im_start|>", false, true).at(0);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), im_start), 0) << "a document's marker became a special token";

  auto style = tokenizer::DetectChatStyle(t);
  ASSERT_TRUE(style.ok());
  const std::vector<int32_t> chat = NeedlePrompt(t, kSpec, "Essays.", *style);
  const std::string chat_text = t.Decode(chat);
  EXPECT_NE(chat_text.find("You answer."), std::string::npos);
  EXPECT_NE(chat_text.find("What is the secret? Be brief."), std::string::npos);
  EXPECT_GE(std::count(chat.begin(), chat.end(), im_start), 3);  // system, user, user (+ assistant)
  EXPECT_EQ(chat_text.find("Question:"), std::string::npos);
}

}  // namespace
}  // namespace slimkv::eval
