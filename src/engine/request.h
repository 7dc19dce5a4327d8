// A generation request as the scheduler takes it, and the outputs it sends back.
//
// The scheduler calls `on_output` on its own (engine) thread, once per generated token
// (with the text that token completed, possibly empty) and once more when the request
// ends (finished = true, with the usage counts). The callback must not block and must not
// call back into the scheduler: RequestStream (request_stream.h) queues outputs for a thread
// that waits; the HTTP server posts each one to its io thread (server/generation.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/logprobs.h"
#include "engine/sampler.h"
#include "kv/footprint.h"

namespace slimkv::engine {

using RequestId = uint64_t;

enum class FinishReason {
  kNone,       // not finished
  kStop,       // end-of-generation token or a stop string
  kLength,     // max_tokens or the context size reached
  kCancelled,  // Cancel() (the client went away)
  kError,      // the request could not run (output.error says why)
};
// "stop", "length", "cancelled", "error" (OpenAI's finish_reason values where it has them).
const char* FinishReasonName(FinishReason r);

struct RequestUsage {
  int prompt_tokens = 0;
  int completion_tokens = 0;  // tokens sampled (an end-of-generation token included)
  int cached_tokens = 0;      // prompt tokens taken from the prefix cache at admission
  int preemptions = 0;        // times the request was preempted and recomputed
};

struct RequestOutput {
  std::string text;          // text completed by this event (UTF-8, possibly empty)
  TokenId token = -1;        // the sampled token, -1 on the final event
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  Status error;        // with kError
  RequestUsage usage;  // on the final event
  // With RequestParams::logprobs >= 0: the sampled token's log-probability (token >= 0).
  bool has_logprob = false;
  TokenLogprob logprob;
  // With RequestParams::prompt_logprobs, on the first token's event: for prompt tokens 1 .. n-1 in
  // order, each token's log-probability given the tokens before it.
  std::vector<TokenLogprob> prompt_logprobs;
  // On the final event of a request with report_kv: what its sequence held at the end, in all and per layer.
  kv::KvUsage kv_usage;
  std::vector<kv::KvUsage> kv_layers;
};

using OutputCallback = std::function<void(const RequestOutput&)>;

// The most top log-probabilities a request may ask for (OpenAI's limit).
inline constexpr int kMaxTopLogprobs = 20;

struct RequestParams {
  std::vector<TokenId> prompt;  // token ids, BOS included when the model wants it
  int max_tokens = 16;          // tokens to generate at most (>= 1)
  SamplingParams sampling;      // each request has its own generator, seeded by sampling.seed
  std::vector<std::string> stop;  // stop strings: generation ends before the first match
  bool ignore_eos = false;      // keep generating past end-of-generation tokens
  // Constrained decoding (OpenAI's response_format {"type": "json_object"}): only tokens that
  // keep the text a prefix of one JSON object are sampled (json_constraint.h), and the request
  // ends with kStop as soon as the object is complete (kLength first if max_tokens runs out,
  // with the object unfinished). Needs a tokenizer; not with forced tokens or prompt_only.
  bool json_object = false;
  uint64_t cache_salt = 0;      // tenant salt of the prefix cache (HashCacheSalt of the text)
  int logprobs = -1;            // >= 0: each token's log-probability and this many top tokens
  bool prompt_logprobs = false;  // the prompt tokens' log-probabilities too
                                 // (OpenAI's echo); the prompt is then computed
                                 // whole, not taken from the prefix cache
  OutputCallback on_output;
  // Evaluation. `forced`: after the prompt these tokens are fed instead of sampled ones (teacher forcing),
  // and `on_logits` receives every logits row the request produces, the prompt's last token's first, then one
  // per forced token ([n_vocab] each); max_tokens is ignored. With an eviction policy forced tokens take the
  // decode path, one per step, so each sees the cache a generated token would.
  std::vector<TokenId> forced;
  std::function<void(std::span<const float>)> on_logits;
  bool prompt_only = false;  // read the prompt (compressed at its end) and finish
  bool report_kv = false;    // fill kv_usage / kv_layers on the final event
};

// A fixed-key 64-bit hash (SipHash-2-4, base/hash.h) of a tenant's cache_salt text: the
// same in every process and build, unlike std::hash. An empty salt hashes to 0 (the shared
// tenant).
uint64_t HashCacheSalt(std::string_view salt);
// The salt of a tenant's own prefix cache: requests share cached blocks only when both the
// tenant (the server's name for who is asking, e.g. a hash of the API key) and the
// cache_salt text are equal. An empty tenant is HashCacheSalt(salt), so a server without
// tenants keeps its salts; a non-empty tenant never maps to the shared tenant 0.
uint64_t TenantSalt(std::string_view tenant, std::string_view salt);

}  // namespace slimkv::engine
