#include "eval/ruler.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "gguf/gguf_file.h"
#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace slimkv::eval {
namespace {

std::string EvalText() {
  const char* dir = std::getenv("SLIMKV_DATA_DIR");
  std::ifstream in(std::string(dir ? dir : (testing::SourceDir() + "/data")) + "/pg_essays.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int Count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(RulerTest, ScoreIsTheShareOfAnswersFound) {
  EXPECT_DOUBLE_EQ(RulerScore({"1234567"}, "The numbers are 1234567."), 1.0);
  EXPECT_DOUBLE_EQ(RulerScore({"ABCDE", "FGHIJ"}, "they are: abcde, XYZ"), 0.5);
  EXPECT_DOUBLE_EQ(RulerScore({"x"}, ""), 0.0);
  EXPECT_DOUBLE_EQ(RulerScore({}, "anything"), 0.0);
  EXPECT_FALSE(FindRulerTask("niah").ok());
  EXPECT_TRUE(FindRulerTask("cwe").ok());
}

// Every task: the answers are in the context where the task says, the prompt
// fills its context, and a seed always gives the same sample.
TEST(RulerTest, SamplesHoldTheirAnswersAndFillTheContext) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto file = gguf::GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  ASSERT_TRUE(tok.ok());
  const std::string text = EvalText();
  ASSERT_GT(text.size(), 100000u);
  RulerGenerator gen(**tok, text);
  auto style = tokenizer::DetectChatStyle(**tok);
  ASSERT_TRUE(style.ok());
  for (const char* task : {"mk", "mv", "vt", "cwe"}) {
    for (int ctx : {512, 2048}) {
      SCOPED_TRACE(std::string(task) + " @ " + std::to_string(ctx));
      auto s = gen.Make(task, ctx, 7);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      ASSERT_FALSE(s->answers.empty());
      const std::string prompt =
          tokenizer::ApplyChatTemplate(*style, (*tok)->chat_template(), {{"user", s->user}}, true) +
          s->answer_prefix;
      const int n = static_cast<int>((*tok)->Encode(prompt, true, true).size());
      const int max_new = FindRulerTask(task)->max_new_tokens;
      EXPECT_LE(n + max_new, ctx);
      EXPECT_GE(n + max_new, ctx * 8 / 10);
      if (std::string(task) == "mk") {
        ASSERT_EQ(s->answers.size(), 1u);
        EXPECT_EQ(Count(s->user, "One of the special magic numbers for "),
                  4);  // 3 distractor keys
        EXPECT_EQ(Count(s->user, s->answers[0]), 1);
      } else if (std::string(task) == "mv") {
        EXPECT_EQ(s->answers.size(), 4u);
        for (const auto& a : s->answers) EXPECT_EQ(Count(s->user, "is: " + a + "."), 1) << a;
      } else if (std::string(task) == "vt") {
        ASSERT_EQ(s->answers.size(), 5u);
        EXPECT_NE(s->user.find("VAR " + s->answers[0] + " = "), std::string::npos);
        // The chain reads top to bottom.
        for (size_t i = 1; i < s->answers.size(); ++i) {
          const size_t at = s->user.find("VAR " + s->answers[i] + " = VAR " + s->answers[i - 1] + ".");
          ASSERT_NE(at, std::string::npos);
          EXPECT_GT(at, s->user.find("VAR " + s->answers[i - 1] + " = "));
        }
      } else {
        EXPECT_EQ(s->answers.size(), 5u);
        for (const auto& a : s->answers)
          EXPECT_EQ(Count(s->user, ". " + a + " ") + Count(s->user, ". " + a + "\n"), 12) << a;
      }
      auto again = gen.Make(task, ctx, 7);
      EXPECT_EQ(again->user, s->user);
      EXPECT_NE(gen.Make(task, ctx, 8)->user, s->user);
    }
  }
  EXPECT_FALSE(gen.Make("mk", 100, 1).ok());
}

}  // namespace
}  // namespace slimkv::eval
