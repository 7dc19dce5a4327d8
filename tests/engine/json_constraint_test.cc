// Constrained sampling for response_format json_object: the token-level constraint
// (engine/json_constraint.h) and the sampler's filter (engine/sampler.h), on a small vocabulary
// of our own and on the real default model's.
#include "engine/json_constraint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "gguf/gguf_file.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::engine {
namespace {

using Kind = ConstraintVocab::Kind;

ConstraintVocab SmallVocab() {
  return ConstraintVocab(
      {"{", "}", "\"", "a", ":", "1", " ", "\n", "", "", "", "{\"a\"", "},", "\"}", ", \"", "1}"},
      {Kind::kText, Kind::kText, Kind::kText, Kind::kText, Kind::kText, Kind::kText, Kind::kText, Kind::kText,
       Kind::kEndOfGeneration, Kind::kNever, Kind::kText, Kind::kText, Kind::kText, Kind::kText, Kind::kText,
       Kind::kText});
}
constexpr TokenId kOpen = 0, kClose = 1, kQuote = 2, kA = 3, kColon = 4, kOne = 5, kSpace = 6, kEog = 8,
                  kControl = 9, kEmpty = 10, kOpenKey = 11, kCloseComma = 12, kQuoteClose = 13,
                  kOneClose = 15;

TEST(JsonConstraintTest, TokensAreAllowedByTheirBytes) {
  const ConstraintVocab vocab = SmallVocab();
  EXPECT_EQ(vocab.bytes(kOpenKey), "{\"a\"");
  EXPECT_EQ(vocab.bytes(kEog), "");
  JsonConstraint c(&vocab);
  EXPECT_TRUE(c.Allows(kOpen));
  EXPECT_TRUE(c.Allows(kOpenKey));
  EXPECT_TRUE(c.Allows(kSpace));
  EXPECT_FALSE(c.Allows(kClose));
  EXPECT_FALSE(c.Allows(kQuote));  // a string is no object
  EXPECT_FALSE(c.Allows(kEog));    // not before the object is complete
  EXPECT_FALSE(c.Allows(kControl));
  EXPECT_FALSE(c.Allows(kEmpty));  // no bytes: no progress
  EXPECT_FALSE(c.Allows(-1));
  EXPECT_FALSE(c.Allows(vocab.size()));
  c.Accept(kOpenKey);
  EXPECT_TRUE(c.Allows(kColon));
  EXPECT_FALSE(c.Allows(kOne));
  c.Accept(kColon);
  EXPECT_TRUE(c.Allows(kOneClose));
  EXPECT_FALSE(c.Allows(kCloseComma));  // "}," : the comma after the object
  c.Accept(kOne);
  EXPECT_FALSE(c.Complete());
  c.Accept(kClose);
  EXPECT_TRUE(c.Complete());
  EXPECT_TRUE(c.Allows(kEog));
  EXPECT_TRUE(c.Allows(kSpace));
  EXPECT_FALSE(c.Allows(kOpen));
  EXPECT_FALSE(c.Allows(kControl));
  EXPECT_FALSE(c.Allows(kQuoteClose));
}

// Sampling with a filter is sampling from logits whose disallowed tokens are -inf, for every
// mode the sampler has (greedy, temperature with top-k / top-p / min-p, penalties).
TEST(ConstrainedSamplerTest, AFilterIsTheSameAsMaskedLogits) {
  constexpr int kVocab = 500;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const std::vector<TokenId> history = {1, 5, 9, 12, 12, 40, 3, 5};
  int draws = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::vector<float> logits(kVocab);
    for (float& l : logits) l = normal(rng);
    const int modulus = 2 + trial % 5;  // allow tokens t % modulus != 0 (about half to 4/5)
    const TokenFilter allowed = [modulus](TokenId t) { return t % modulus != 0; };
    std::vector<float> masked = logits;
    for (int t = 0; t < kVocab; ++t) {
      if (!allowed(t)) masked[t] = -std::numeric_limits<float>::infinity();
    }
    SamplingParams p;
    p.temperature = trial % 4 == 0 ? 0.0f : 0.3f + 0.2f * (trial % 7);
    p.top_k = std::vector<int>{0, 1, 5, 40, 100}[trial % 5];
    p.top_p = trial % 3 == 0 ? 1.0f : 0.9f;
    p.min_p = trial % 2 ? 0.0f : 0.05f;
    p.repeat_penalty = trial % 6 == 0 ? 1.3f : 1.0f;
    p.frequency_penalty = trial % 8 == 1 ? 0.5f : 0.0f;
    p.presence_penalty = trial % 8 == 3 ? 0.7f : 0.0f;
    p.seed = trial;
    // The allowed tokens listed at once (in a scrambled order), as JsonConstraint lists them.
    const TokenLister list = [&](std::vector<TokenId>* out) {
      for (int t = kVocab - 1; t >= 0; --t) {
        if (allowed(t)) out->push_back(t);
      }
      std::shuffle(out->begin(), out->end(), std::mt19937_64(trial));
    };
    Sampler filtered(p, 3), listed(p, 3), reference(p, 3);
    for (int k = 0; k < 5; ++k) {
      const TokenId a = filtered.Sample(logits, history, allowed);
      const TokenId b = reference.Sample(masked, history);
      const TokenId c = listed.Sample(logits, history, allowed, list);
      ASSERT_EQ(a, b) << "trial " << trial << " draw " << k;
      ASSERT_EQ(c, b) << "trial " << trial << " draw " << k << " (with a lister)";
      ASSERT_TRUE(allowed(a));
      ++draws;
    }
  }
  EXPECT_EQ(draws, 2000);
}

TEST(ConstrainedSamplerTest, NoAllowedTokenIsKNoToken) {
  const std::vector<float> logits = {1, 2, 3, 4};
  const TokenFilter none = [](TokenId) { return false; };
  for (float temp : {0.0f, 0.8f}) {
    for (int top_k : {0, 2}) {
      SamplingParams p;
      p.temperature = temp;
      p.top_k = top_k;
      EXPECT_EQ(Sampler(p).Sample(logits, {}, none), kNoToken);
    }
  }
  // The least likely token, when it is the only one allowed.
  SamplingParams p;
  p.top_k = 2;
  EXPECT_EQ(Sampler(p).Sample(logits, {}, [](TokenId t) { return t == 0; }), 0);
  p.temperature = 0;
  EXPECT_EQ(Sampler(p).Sample(logits, {}, [](TokenId t) { return t == 0; }), 0);
}

class RealVocabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
    auto file = gguf::GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    file_ = std::make_unique<gguf::GgufFile>(std::move(file).value());
    auto tok = tokenizer::Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tok_ = std::move(tok).value();
    vocab_ = ConstraintVocab::FromTokenizer(*tok_);
  }
  std::unique_ptr<gguf::GgufFile> file_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  std::unique_ptr<ConstraintVocab> vocab_;
};

TEST_F(RealVocabTest, SpecialTokensAreNeverTextAndEveryNeededByteHasAToken) {
  int eog = 0;
  std::vector<bool> single_byte(256, false);
  for (TokenId t = 0; t < vocab_->size(); ++t) {
    const Kind k = vocab_->kind(t);
    if (tok_->IsEndOfGeneration(t)) {
      EXPECT_EQ(k, Kind::kEndOfGeneration) << t;
      ++eog;
    }
    if (tok_->GetTokenType(t) == tokenizer::TokenType::kControl) {
      EXPECT_NE(k, Kind::kText) << tok_->TokenText(t);
    }
    if (k == Kind::kText && vocab_->bytes(t).size() == 1)
      single_byte[static_cast<uint8_t>(vocab_->bytes(t)[0])] = true;
  }
  EXPECT_GT(eog, 0);
  EXPECT_NE(vocab_->kind(tok_->Find("<|im_start|>")), Kind::kText);
  // Every byte the grammar may need next has a token of its own (printable ASCII, JSON's
  // whitespace, UTF-8 continuation bytes), so the constraint never leaves the model without a
  // way on. (Bytes that only start a character may be missing: SmolLM2 has no token "\xF1".)
  for (int b = 0; b < 256; ++b) {
    if ((b >= 0x20 && b < 0x7F) || b == '\t' || b == '\n' || b == '\r' || (b >= 0x80 && b < 0xC0)) {
      EXPECT_TRUE(single_byte[b]) << "no token for byte " << b;
    }
  }
}

// The trie walk lists exactly the tokens Allows accepts, in every kind of state of the grammar.
TEST_F(RealVocabTest, AllowedTokensListsExactlyWhatAllowsAccepts) {
  const std::string text =
      "{\"k\": [1, -0.5e+1, \"caf\xC3\xA9 \\u00e9\", true, {\"n\": null}], \"x\": \"\\uD83D\\uDE00\"}";
  JsonConstraint c(vocab_.get());
  std::vector<TokenId> listed;
  // Every prefix of the text, fed one byte-token at a time.
  for (size_t i = 0; i <= text.size(); ++i) {
    c.AllowedTokens(&listed);
    std::sort(listed.begin(), listed.end());
    std::vector<TokenId> brute;
    for (TokenId t = 0; t < vocab_->size(); ++t) {
      if (c.Allows(t)) brute.push_back(t);
    }
    ASSERT_EQ(listed, brute) << "after " << text.substr(0, i);
    if (i == text.size()) break;
    // The token of exactly this byte.
    TokenId byte_token = -1;
    for (TokenId t = 0; t < vocab_->size() && byte_token < 0; ++t) {
      if (vocab_->kind(t) == Kind::kText && vocab_->bytes(t) == text.substr(i, 1)) byte_token = t;
    }
    ASSERT_GE(byte_token, 0) << "byte " << static_cast<int>(static_cast<uint8_t>(text[i]));
    c.Accept(byte_token);
  }
  EXPECT_TRUE(c.Complete());
  // Complete: end-of-generation tokens and whitespace.
  EXPECT_FALSE(listed.empty());
  for (TokenId t : listed) {
    EXPECT_TRUE(vocab_->kind(t) == Kind::kEndOfGeneration ||
                vocab_->bytes(t).find_first_not_of(" \t\n\r") == std::string_view::npos)
        << t;
  }
}

// Random logits that favour tokens the JSON cannot take (specials, quotes, brackets): each
// sampled token is allowed, the text is always a prefix a fresh validator accepts, greedy picks
// the most likely allowed token, and each object that completes parses (nlohmann::json) as an
// object.
TEST_F(RealVocabTest, MaskingNeverPicksAnInvalidToken) {
  const int n = vocab_->size();
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<TokenId> favoured;  // tokens that are often wrong
  for (const char* text : {"<|im_start|>", "<|im_end|>", "<|endoftext|>", "\"", "}", "]", ",", ":", "{", "[",
                           "\n", " ", "1", "0", "true", "."}) {
    for (TokenId t : tok_->Encode(text, false, true)) favoured.push_back(t);
  }
  int completed = 0, tokens = 0;
  for (int run = 0; run < 12; ++run) {
    SamplingParams p;
    p.temperature = run % 3 == 0 ? 0.0f : 1.0f;
    p.top_k = run % 2 ? 0 : 40;
    p.top_p = run % 4 == 1 ? 0.9f : 1.0f;
    p.min_p = 0;
    p.seed = run;
    Sampler sampler(p);
    JsonConstraint c(vocab_.get());
    std::string text;
    std::vector<TokenId> history;
    for (int step = 0; step < 300 && !c.Complete(); ++step) {
      std::vector<float> logits(n);
      for (float& l : logits) l = normal(rng);
      for (TokenId t : favoured) logits[t] += 8.0f;
      // The object keeps closing only if it can: nudge closers up late in the run.
      if (step > 150) logits[tok_->Encode("}", false, false)[0]] += 12.0f;
      const TokenFilter allowed = [&c](TokenId t) { return c.Allows(t); };
      const TokenLister list = [&c](std::vector<TokenId>* out) { c.AllowedTokens(out); };
      const TokenId t =
          run % 2 ? sampler.Sample(logits, history, allowed, list) : sampler.Sample(logits, history, allowed);
      ASSERT_NE(t, kNoToken);
      ASSERT_TRUE(c.Allows(t)) << t;
      if (p.temperature == 0) {
        TokenId best = -1;
        for (TokenId u = 0; u < n; ++u) {
          if (c.Allows(u) && (best < 0 || logits[u] > logits[best])) best = u;
        }
        ASSERT_EQ(t, best) << "step " << step;
      }
      c.Accept(t);
      history.push_back(t);
      text += vocab_->bytes(t);
      JsonValidator fresh;
      ASSERT_TRUE(fresh.Push(text)) << text;
      ++tokens;
    }
    if (c.Complete()) {
      ++completed;
      const auto parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      ASSERT_FALSE(parsed.is_discarded()) << text;
      EXPECT_TRUE(parsed.is_object()) << text;
    }
  }
  EXPECT_GT(tokens, 100);
  EXPECT_GT(completed, 0);
}

}  // namespace
}  // namespace slimkv::engine

namespace slimkv::engine {
namespace {

// Gemma marks its whitespace runs ("\n", "\n\n", "    ") user-defined beside its markers
// ("<start_of_image>", "[multimodal]"): the runs are text the object may use, the markers never.
TEST(GemmaVocabTest, WhitespaceRunsAreTextMarkersAreNot) {
  SLIMKV_REQUIRE_MODEL(path, "gemma-3-270m-q4_k_m.gguf");
  auto file = gguf::GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  const auto vocab = ConstraintVocab::FromTokenizer(**tok);
  int runs = 0, markers = 0;
  for (TokenId t = 0; t < vocab->size(); ++t) {
    if ((*tok)->GetTokenType(t) != tokenizer::TokenType::kUserDefined || (*tok)->IsEndOfGeneration(t))
      continue;
    const std::string piece = (*tok)->TokenToPiece(t);
    if (!piece.empty() && piece.find_first_not_of(" \t\n\r") == std::string::npos) {
      EXPECT_EQ(vocab->kind(t), Kind::kText) << t;
      ++runs;
    } else {
      EXPECT_EQ(vocab->kind(t), Kind::kNever) << piece;
      ++markers;
    }
  }
  EXPECT_GT(runs, 50);
  EXPECT_GT(markers, 0);
  const TokenId newline = (*tok)->Find("\n");
  ASSERT_GE(newline, 0);
  JsonConstraint c(vocab.get());
  c.Accept((*tok)->Find("{"));
  EXPECT_TRUE(c.Allows(newline));
  EXPECT_FALSE(c.Allows((*tok)->Find("<start_of_image>")));
}

}  // namespace
}  // namespace slimkv::engine
