// Next-token sampling, in llama.cpp's default order: repetition penalty -> top-k -> top-p
// -> min-p -> temperature -> draw. Temperature <= 0 is greedy. The random generator is
// seeded explicitly so runs repeat.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "base/status.h"

namespace slimkv::engine {

using TokenId = int32_t;

struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;    // tokens of history the penalty looks at
  uint64_t seed = 0;

  // InvalidArgument naming the field for values outside their range.
  Status Validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) {}
  // `logits` of the vocabulary (not modified); `history`: tokens so far (prompt included).
  TokenId Sample(std::span<const float> logits, std::span<const TokenId> history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, TokenId>> cand_;  // scratch
};

TokenId Argmax(std::span<const float> logits);

}  // namespace slimkv::engine
