// Log-probabilities in OpenAI's two wire forms, from what the scheduler returns
// (engine/logprobs.h):
//   /v1/completions:      {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{text: lp}],
//                          "text_offset": [...]}, one entry per token; with echo the prompt's
//                          tokens come first and the first one has null (nothing predicts it),
//                          as OpenAI and vLLM send it and lm-evaluation-harness reads it;
//   /v1/chat/completions: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
// A token's text is its piece as the tokenizer renders it alone (a multi-byte character split
// across tokens gives pieces that are not valid UTF-8: `bytes` carries them exactly, the text
// is what Dump's replacement makes of them).
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "engine/logprobs.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::server {

// Completions form. `prompt`: the prompt's tokens (its first token without a log-probability)
// and `prompt_logprobs` for tokens 1.., empty without echo; `generated`: the sampled tokens'.
// `text_offset` counts bytes from the start of the returned text (the echoed prompt included).
nlohmann::json CompletionLogprobsJson(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& prompt,
                                      const std::vector<engine::TokenLogprob>& prompt_logprobs,
                                      const std::vector<engine::TokenLogprob>& generated,
                                      size_t first_offset = 0);
// Chat form of the sampled tokens.
nlohmann::json ChatLogprobsJson(const tokenizer::Tokenizer& tok,
                                const std::vector<engine::TokenLogprob>& generated);

}  // namespace slimkv::server
