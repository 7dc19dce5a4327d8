// Log-probabilities of tokens under the model's next-token distribution, as
// evaluators ask for them (OpenAI's logprobs / top_logprobs,
// lm-evaluation-harness's loglikelihood): the log-softmax of the raw logits,
// before any sampling filter, penalty or temperature (vLLM's default,
// "raw_logprobs").
#pragma once

#include <span>
#include <vector>

#include "engine/sampler.h"

namespace slimkv::engine {

struct TopLogprob {
  TokenId token = -1;
  float logprob = 0;
};

struct TokenLogprob {
  TokenId token = -1;
  float logprob = 0;            // of `token`
  int rank = 0;                 // 1 + how many tokens are more likely
  std::vector<TopLogprob> top;  // the `top_k` most likely, most likely first
};

// `logits`: one row of the vocabulary. top_k in [0, vocabulary].
TokenLogprob ComputeLogprob(std::span<const float> logits, TokenId token, int top_k);

}  // namespace slimkv::engine
