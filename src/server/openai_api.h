// The OpenAI wire format: request bodies of /v1/completions and /v1/chat/completions parsed
// into what the scheduler needs, and responses, stream chunks and usage objects built from
// what it returns. Pure functions of JSON and the tokenizer: no sockets, no threads.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/request.h"
#include "engine/sampler.h"
#include "server/api_error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::server {

enum class Endpoint { kCompletions, kChat };

struct ApiLimits {
  int n_ctx = 4096;                 // tokens per sequence; a prompt must be shorter
  int64_t max_sequence_tokens = 0;  // tokens the KV pool holds for one request (0: n_ctx)
  int max_prompt_tokens = 0;        // 0: n_ctx - 1
  int max_tokens = 4096;            // the largest max_tokens a request may ask for
  int default_max_tokens = 0;       // when a request gives none; 0: OpenAI's (16 for completions,
                                    // the rest of the context for chat), capped by max_tokens and
                                    // by what the KV pool holds for one request
  int max_n = 4;                    // choices per request
  int max_stop = 4;                 // stop strings per request
  size_t max_stop_bytes = 256;      // bytes per stop string
};

// The model's chat template, as the tokenizer part detects it.
struct ChatFormat {
  tokenizer::ChatStyle style = tokenizer::ChatStyle::kChatMl;
  std::string template_text;
};

struct ParsedRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // as the client named it (any name is accepted)
  std::vector<tokenizer::TokenId> prompt;
  int max_tokens = 16;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  engine::SamplingParams sampling;
  bool seed_given = false;  // otherwise the server draws one per request
  std::vector<std::string> stop;
  std::string cache_salt;  // tenant of the prefix cache
  bool ignore_eos = false;
  bool json_object = false;  // response_format {"type": "json_object"}: constrained decoding
  // Log-probabilities: -1 none, else each sampled token's with this many top tokens
  // (completions: `logprobs: N`; chat: `logprobs: true` with `top_logprobs: N`).
  int logprobs = -1;
  bool echo = false;        // completions: the prompt starts the text (and its logprobs)
  std::string prompt_text;  // with echo: the prompt as the client sent it (else decoded)
};

// Parses and checks a request body. On failure returns false with *error set (400 naming
// the field; a prompt longer than the context names both lengths; a prompt + max_tokens
// longer than the context or than the KV pool holds for one request names every number,
// as vLLM does). Never throws, whatever the JSON holds.
bool ParseRequest(Endpoint endpoint, const nlohmann::json& body, const tokenizer::Tokenizer& tok,
                  const ChatFormat& chat, const ApiLimits& limits, const engine::SamplingParams& defaults,
                  ParsedRequest* out, ApiError* error);

// {"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details": {"cached_tokens"}}
nlohmann::json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens);

struct ChoiceResult {
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  nlohmann::json logprobs;    // null, or logprobs_json.h's form of the endpoint
};

// The whole (non-streamed) response.
nlohmann::json CompletionResponse(Endpoint endpoint, const std::string& id, int64_t created,
                                  const std::string& model, const std::vector<ChoiceResult>& choices,
                                  const nlohmann::json& usage);
// One streamed chunk for choice `index`: a text piece, or (finish_reason non-empty) its end.
// Chat's first chunk of a choice carries the role (`first`).
nlohmann::json StreamChunk(Endpoint endpoint, const std::string& id, int64_t created,
                           const std::string& model, int index, const std::string& text,
                           const std::string& finish_reason, bool first,
                           const nlohmann::json& logprobs = nullptr);
// The last chunk when include_usage: no choices, the usage.
nlohmann::json UsageChunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                          const nlohmann::json& usage);

// JSON text for the wire: invalid UTF-8 (which the engine never produces) is replaced, not thrown.
std::string Dump(const nlohmann::json& j);

}  // namespace slimkv::server
