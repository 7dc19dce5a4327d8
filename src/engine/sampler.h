// Next-token sampling, in llama.cpp's default order: penalties -> top-k -> top-p
// -> min-p -> temperature -> draw. Temperature <= 0 is greedy. The random generator is
// seeded explicitly so runs repeat.
//
// Penalties: the repetition penalty (llama.cpp's and vLLM's: positive logits
// divided, negative ones multiplied) over the last repeat_last_n tokens, prompt
// included; then OpenAI's frequency and presence penalties over the generated
// tokens only (as vLLM applies them): logit -= frequency_penalty x count +
// presence_penalty x (count > 0).
//
// Constraints (response_format json_object): an optional filter says which tokens may come
// next. The result is exactly that of sampling from logits with every disallowed token set to
// -inf (tested against it): the filters above run over the allowed tokens only. The filter is
// asked lazily, most likely tokens first: greedy stops at the first allowed one, top-k at the
// k-th among the most likely few. When that finds too few (most tokens are not allowed, as
// between JSON values) or there is no top-k, the optional lister writes every allowed token
// at once (JsonConstraint walks a byte trie); without a lister every token is asked.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "base/status.h"

namespace slimkv::engine {

using TokenId = int32_t;

// Whether a token may be sampled next (empty: every token may).
using TokenFilter = std::function<bool(TokenId)>;

// Writes every token the filter allows (any order).
using TokenLister = std::function<void(std::vector<TokenId>*)>;

// Sample's answer when the filter allows no token at all.
inline constexpr TokenId kNoToken = -1;

struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;                  // <= 0: off
  float top_p = 0.95f;             // >= 1: off
  float min_p = 0.05f;             // <= 0: off
  float repeat_penalty = 1.0f;     // 1: off
  int repeat_last_n = 64;          // tokens of history the penalty looks at
  float frequency_penalty = 0.0f;  // [-2, 2]; 0: off
  float presence_penalty = 0.0f;   // [-2, 2]; 0: off
  uint64_t seed = 0;

  // InvalidArgument naming the field for values outside their range.
  Status Validate() const;
};

class Sampler {
 public:
  // `prompt_tokens`: how many of the history's first tokens are the prompt (the
  // frequency and presence penalties count the rest).
  explicit Sampler(const SamplingParams& p, size_t prompt_tokens = 0)
      : p_(p), rng_(p.seed), prompt_tokens_(prompt_tokens) {}
  // `logits` of the vocabulary (not modified); `history`: tokens so far (prompt included);
  // `allowed`, `list_allowed` (optional, with `allowed` only): see above. kNoToken when
  // `allowed` rejects every token.
  TokenId Sample(std::span<const float> logits, std::span<const TokenId> history,
                 const TokenFilter& allowed = {}, const TokenLister& list_allowed = {});

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  size_t prompt_tokens_ = 0;
  // The candidates, most likely first: the `top_k` most likely allowed ones (all allowed ones
  // without top-k). False when none is allowed.
  bool KeepAllowed(const TokenFilter& allowed, const TokenLister& list_allowed);
  // cand_ = the listed allowed tokens with their scores from score_, most likely first.
  void TakeListed(const TokenLister& list_allowed);

  std::vector<std::pair<float, TokenId>> cand_;  // scratch
  std::vector<float> score_;                     // [n_vocab] penalized logits, with a lister
  std::vector<TokenId> listed_;                  // scratch of the lister
};

TokenId Argmax(std::span<const float> logits);

}  // namespace slimkv::engine
