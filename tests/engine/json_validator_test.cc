// The incremental JSON validator (engine/json_validator.h) on valid and invalid corpora: a
// complete object is Complete(), every prefix of a valid text is accepted (so a decoder that
// follows it can always finish), and an invalid text is rejected at its first bad byte.
#include "engine/json_validator.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace slimkv::engine {
namespace {

// Feeds `text` one byte at a time: the number of bytes accepted.
size_t AcceptedBytes(const std::string& text, JsonValidator* v) {
  for (size_t i = 0; i < text.size(); ++i) {
    if (!v->Push(text.substr(i, 1))) return i;
  }
  return text.size();
}

const std::vector<std::string> kValid = {
    "{}",
    " \n\t\r{}",
    "{ }",
    R"({"a":1})",
    R"({"a": -0.5e+10, "b": 0, "c": -0, "d": 1.25E-3, "e": 123456789, "f": 0.0, "g": 1e5, "h": 10E+0})",
    R"({"s": "tab\tnew\nquote\"slash\\\/bs\bff\fcr\r"})",
    R"({"u": "\u00e9\u4E2D\uD83D\uDE00 \u0000"})",
    "{\"utf8\": \"caf\xC3\xA9 \xE4\xB8\xAD \xF0\x9F\x98\x80 \xEF\xBF\xBF \xF4\x8F\xBF\xBF\"}",
    R"({"t": true, "f": false, "n": null})",
    R"({"arr": [], "arr2": [1, [2, [3, {}]], "x", {"y": [true]}], "o": {"p": {"q": {}}}})",
    R"({"": ""})",
    R"({"a" : [ 1 , 2 ] , "b" : { "c" : null } })",
    "{\"a\":1}   \n",
};

const std::vector<std::string> kInvalid = {
    "[]",  // the top level must be an object
    "\"x\"",
    "1",
    "true",
    "{,}",
    R"({"a":1,})",      // trailing comma
    R"({"a":[1,2,]})",  // trailing comma in an array
    R"({"a":01})",      // leading zero
    R"({"a":-01})",
    R"({"a":1.})",  // fraction without digits
    R"({"a":.5})",
    R"({"a":1e})",
    R"({"a":1e+})",
    R"({"a":+1})",
    R"({"a":--1})",
    R"({"a":1.2.3})",
    R"({"a":tru})",
    R"({"a":True})",
    R"({"a":nul1})",
    R"({a:1})",  // unquoted key
    R"({'a':1})",
    R"({"a" 1})",        // missing colon
    R"({"a":1 "b":2})",  // missing comma
    R"({"a":1}})",       // extra closing bracket
    R"({"a":1]})",       // mismatched bracket
    R"({"a":[1}})",
    R"({"a":"\x"})",      // bad escape
    R"({"a":"\u12G4"})",  // bad hex digit
    R"({"a":"\uDE00"})",  // lone low surrogate
    R"({"a":"\uD83D"})",  // high surrogate without its low half
    R"({"a":"\uD83Dx"})",
    R"({"a":"\uD83D\u0041"})",
    R"({"a":"\uD83D\uD83D"})",
    "{\"a\":\"line\nbreak\"}",  // control character in a string
    "{\"a\":\"\x01\"}",
    "{\"a\":\"\xC0\xAF\"}",          // overlong UTF-8
    "{\"a\":\"\xE0\x80\xAF\"}",      // overlong
    "{\"a\":\"\xED\xA0\x80\"}",      // UTF-8 surrogate
    "{\"a\":\"\xF4\x90\x80\x80\"}",  // above U+10FFFF
    "{\"a\":\"\xF5\x80\x80\x80\"}",
    "{\"a\":\"\xC3\"}",  // truncated character
    "{\"a\":\"\x80\"}",  // stray continuation byte
    "{} x",              // text after the object
    "{}{}",
    std::string("{\"a\":1}\0", 8),
};

TEST(JsonValidatorTest, ValidObjectsAreAcceptedAndComplete) {
  for (const std::string& text : kValid) {
    JsonValidator v;
    EXPECT_EQ(AcceptedBytes(text, &v), text.size()) << text;
    EXPECT_TRUE(v.Complete()) << text;
    // All at once gives the same.
    JsonValidator w;
    EXPECT_TRUE(w.Push(text)) << text;
    EXPECT_TRUE(w.Complete()) << text;
  }
}

TEST(JsonValidatorTest, ProperPrefixesAreAcceptedButNotComplete) {
  for (const std::string& text : kValid) {
    const size_t end = text.rfind('}');
    for (size_t n = 0; n <= end; ++n) {
      JsonValidator v;
      ASSERT_TRUE(v.Push(text.substr(0, n))) << text << " at " << n;
      EXPECT_FALSE(v.Complete()) << text.substr(0, n);
    }
  }
}

TEST(JsonValidatorTest, InvalidTextsAreRejected) {
  for (const std::string& text : kInvalid) {
    JsonValidator v;
    const size_t accepted = AcceptedBytes(text, &v);
    EXPECT_FALSE(accepted == text.size() && v.Complete()) << text;
    // A rejected byte leaves the validator as it was: all or nothing.
    JsonValidator w;
    EXPECT_FALSE(w.Push(text) && w.Complete()) << text;
  }
}

TEST(JsonValidatorTest, RejectionIsAtTheFirstBadByte) {
  struct Case {
    std::string text;
    size_t accepted;
  };
  for (const Case& c : std::vector<Case>{{R"({"a":01})", 6},
                                         {R"({"a":1,})", 7},
                                         {R"({"a":"\uDE00"})", 9},
                                         {R"({"a":"\uD83D\u0041"})", 14},
                                         {"{\"a\":\"x\ny\"}", 7},
                                         {"[", 0},
                                         {"{}}", 2}}) {
    JsonValidator v;
    EXPECT_EQ(AcceptedBytes(c.text, &v), c.accepted) << c.text;
  }
}

TEST(JsonValidatorTest, PushIsAllOrNothingAndAcceptsChangesNothing) {
  JsonValidator v;
  ASSERT_TRUE(v.Push(R"({"a": [1, )"));
  EXPECT_TRUE(v.Accepts("2]}"));
  EXPECT_FALSE(v.Accepts("2}"));
  EXPECT_FALSE(v.Push("2,}"));  // the '2' and ',' would fit; the '}' does not
  EXPECT_EQ(v.depth(), 2);
  EXPECT_TRUE(v.Push("2]}"));
  EXPECT_TRUE(v.Complete());
  EXPECT_EQ(v.depth(), 0);
}

TEST(JsonValidatorTest, WhitespaceRunsAreBounded) {
  const std::string run(JsonValidator::kMaxWhitespaceRun, ' ');
  JsonValidator v;
  EXPECT_TRUE(v.Push(run));
  EXPECT_FALSE(v.Accepts(" "));
  EXPECT_FALSE(v.Accepts("\n"));
  EXPECT_TRUE(v.Push("{"));  // a token resets the run
  EXPECT_TRUE(v.Push(run));
  EXPECT_FALSE(v.Accepts("\t"));
  EXPECT_TRUE(v.Push("\"k\""));
  EXPECT_TRUE(v.Push(run + ":" + run + "1" + run + "}" + run));
  EXPECT_TRUE(v.Complete());
  EXPECT_FALSE(v.Accepts(" "));
  // Whitespace inside a string is text, not counted.
  JsonValidator s;
  EXPECT_TRUE(s.Push("{\"" + std::string(100, ' ') + "\":1}"));
  EXPECT_TRUE(s.Complete());
}

TEST(JsonValidatorTest, NestingIsBoundedWithoutADeadEnd) {
  JsonValidator v;
  ASSERT_TRUE(v.Push("{\"a\":"));
  for (int d = 1; d < JsonValidator::kMaxDepth; ++d) ASSERT_TRUE(v.Push("[")) << d;
  EXPECT_EQ(v.depth(), JsonValidator::kMaxDepth);
  EXPECT_FALSE(v.Accepts("["));
  EXPECT_FALSE(v.Accepts("{"));
  // A scalar still fits, and the brackets close.
  ASSERT_TRUE(v.Push("1"));
  for (int d = 1; d < JsonValidator::kMaxDepth; ++d) ASSERT_TRUE(v.Push("]")) << d;
  EXPECT_TRUE(v.Push("}"));
  EXPECT_TRUE(v.Complete());
}

// Every byte a prefix accepts leads on to a completion: from each state reached by a valid
// corpus, the validator accepts some byte unless the object is complete (no dead ends).
TEST(JsonValidatorTest, EveryAcceptedPrefixCanContinue) {
  for (const std::string& text : kValid) {
    JsonValidator v;
    for (size_t i = 0; i < text.size(); ++i) {
      if (v.Complete()) break;
      for (int b = 0; b < 256; ++b) {
        JsonValidator w = v;
        if (!w.Push(std::string(1, static_cast<char>(b)))) continue;
        // A greedy closing sequence from w: the first closer that fits, until the object is complete.
        bool finished = w.Complete();
        for (int step = 0; step < 200 && !finished; ++step) {
          bool moved = false;
          for (const char* closer :
               {"\"", "}", "]", ":", "0", "D", "e", "\\", "u", "r", "a", "l", "s", "\x80", "\xA0", "{"}) {
            if (w.Push(closer)) {
              moved = true;
              break;
            }
          }
          ASSERT_TRUE(moved) << "dead end after " << text.substr(0, i) << " + byte " << b;
          finished = w.Complete();
        }
        EXPECT_TRUE(finished) << text.substr(0, i) << " + byte " << b;
      }
      ASSERT_TRUE(v.Push(text.substr(i, 1)));
    }
  }
}

}  // namespace
}  // namespace slimkv::engine
