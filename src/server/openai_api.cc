#include "server/openai_api.h"

#include <cmath>
#include <limits>

namespace slimkv::server {
namespace {

using nlohmann::json;

// Field readers: false (with *error) when the field has the wrong type or range. A missing
// field or JSON null leaves the value as it is.
bool ReadNumber(const json& body, const char* name, double lo, double hi, float* v, ApiError* error) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_number()) {
    *error = BadRequest(fmt::format("'{}' must be a number", name), name);
    return false;
  }
  const double x = it->get<double>();
  if (!(x >= lo && x <= hi)) {
    *error = BadRequest(fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x), name);
    return false;
  }
  *v = static_cast<float>(x);
  return true;
}

bool ReadInt(const json& body, const char* name, int64_t lo, int64_t hi, int64_t* v, ApiError* error) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_number_integer()) {
    *error = BadRequest(fmt::format("'{}' must be an integer", name), name);
    return false;
  }
  // Unsigned JSON integers above INT64_MAX read as negative: reject both ends explicitly.
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    *error = BadRequest(fmt::format("'{}' must be in [{}, {}]", name, lo, hi), name);
    return false;
  }
  const int64_t x = it->get<int64_t>();
  if (x < lo || x > hi) {
    *error = BadRequest(fmt::format("'{}' must be in [{}, {}], got {}", name, lo, hi, x), name);
    return false;
  }
  *v = x;
  return true;
}

bool ReadBool(const json& body, const char* name, bool* v, ApiError* error) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_boolean()) {
    *error = BadRequest(fmt::format("'{}' must be true or false", name), name);
    return false;
  }
  *v = it->get<bool>();
  return true;
}

bool ReadString(const json& body, const char* name, std::string* v, ApiError* error) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return true;
  if (!it->is_string()) {
    *error = BadRequest(fmt::format("'{}' must be a string", name), name);
    return false;
  }
  *v = it->get<std::string>();
  return true;
}

// The text of a chat message's content: a string, or an array of {"type": "text", "text"}.
bool ContentText(const json& content, size_t i, std::string* text, ApiError* error) {
  const std::string param = fmt::format("messages[{}].content", i);
  if (content.is_string()) {
    *text = content.get<std::string>();
    return true;
  }
  if (content.is_null()) {
    text->clear();
    return true;
  }
  if (!content.is_array()) {
    *error = BadRequest(param + " must be a string or an array of text parts", param);
    return false;
  }
  text->clear();
  for (const json& part : content) {
    const auto type = part.is_object() ? part.find("type") : part.end();
    if (!part.is_object() || type == part.end() || !type->is_string() || *type != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      *error = BadRequest(param + ": only parts of type 'text' are supported", param);
      return false;
    }
    *text += part["text"].get<std::string>();
  }
  return true;
}

bool ChatPrompt(const json& body, const tokenizer::Tokenizer& tok, const ChatFormat& chat,
                std::vector<tokenizer::TokenId>* prompt, ApiError* error) {
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty()) {
    *error = BadRequest("'messages' must be a non-empty array", "messages");
    return false;
  }
  std::vector<tokenizer::ChatMessage> msgs;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      *error = BadRequest(fmt::format("messages[{}] must be an object with a 'role'", i),
                          fmt::format("messages[{}]", i));
      return false;
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant") {
      *error = BadRequest(
          fmt::format("messages[{}].role '{}' is not one of system, developer, user, assistant", i, role),
          fmt::format("messages[{}].role", i));
      return false;
    }
    std::string text;
    if (!ContentText(m.contains("content") ? m["content"] : json(), i, &text, error)) return false;
    msgs.push_back({std::move(role), std::move(text)});
  }
  const std::string rendered = tokenizer::ApplyChatTemplate(chat.style, chat.template_text, msgs, true);
  auto ids = tok.EncodeText(rendered, tok.add_bos_default(), /*parse_special=*/true);
  if (!ids.ok()) {
    *error = BadRequest("'messages': " + ids.status().message(), "messages");
    return false;
  }
  *prompt = std::move(ids).value();
  // A template that already starts with BOS must not get a second one.
  if (prompt->size() >= 2 && (*prompt)[0] == tok.bos() && (*prompt)[1] == tok.bos())
    prompt->erase(prompt->begin());
  return true;
}

bool TokenArray(const json& a, int32_t n_vocab, std::vector<tokenizer::TokenId>* prompt, ApiError* error) {
  prompt->clear();
  for (const json& t : a) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= n_vocab) {
      *error = BadRequest(fmt::format("'prompt' token ids must be integers in [0, {})", n_vocab), "prompt");
      return false;
    }
    prompt->push_back(static_cast<tokenizer::TokenId>(t.get<int64_t>()));
  }
  return true;
}

bool CompletionPrompt(const json& body, const tokenizer::Tokenizer& tok,
                      std::vector<tokenizer::TokenId>* prompt, ApiError* error) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) {
    *error = BadRequest("'prompt' is required", "prompt");
    return false;
  }
  const json* p = &*it;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    auto ids =
        tok.EncodeText(p->get_ref<const std::string&>(), tok.add_bos_default(), /*parse_special=*/false);
    if (!ids.ok()) {
      *error = BadRequest("'prompt': " + ids.status().message(), "prompt");
      return false;
    }
    *prompt = std::move(ids).value();
    return true;
  }
  if (p->is_array() && !p->empty() && (*p)[0].is_number())
    return TokenArray(*p, tok.vocab_size(), prompt, error);
  *error = BadRequest(
      "'prompt' must be a string, an array of token ids, or an array holding one of those "
      "(send one request per prompt)",
      "prompt");
  return false;
}

bool ReadStop(const json& body, const ApiLimits& limits, std::vector<std::string>* stop, ApiError* error) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return true;
  std::vector<std::string> out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const json& s : *it) {
      if (!s.is_string()) {
        *error = BadRequest("'stop' must be a string or an array of strings", "stop");
        return false;
      }
      out.push_back(s.get<std::string>());
    }
  } else {
    *error = BadRequest("'stop' must be a string or an array of strings", "stop");
    return false;
  }
  if (static_cast<int>(out.size()) > limits.max_stop) {
    *error = BadRequest(
        fmt::format("at most {} stop strings are allowed, got {}", limits.max_stop, out.size()), "stop");
    return false;
  }
  for (const std::string& s : out) {
    if (s.size() > limits.max_stop_bytes) {
      *error = BadRequest(fmt::format("stop strings may be at most {} bytes", limits.max_stop_bytes), "stop");
      return false;
    }
  }
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  *stop = std::move(out);
  return true;
}

// Fields that change what is generated and that slimkv does not implement: refused rather
// than silently ignored (false, 0 and null are accepted, as they mean "off").
bool RejectUnsupported(const json& body, ApiError* error) {
  for (const char* name : {"suffix", "tools", "functions", "logit_bias"}) {
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) continue;
    const bool off = (it->is_boolean() && !it->get<bool>()) || (it->is_number() && it->get<double>() == 0) ||
                     ((it->is_array() || it->is_object()) && it->empty());
    if (!off) {
      *error = BadRequest(fmt::format("'{}' is not supported by this server", name), name,
                          "unsupported_parameter");
      return false;
    }
  }
  if (auto it = body.find("best_of");
      it != body.end() && !it->is_null() && !(it->is_number_integer() && it->get<int64_t>() == 1)) {
    *error = BadRequest("'best_of' is not supported by this server", "best_of", "unsupported_parameter");
    return false;
  }
  return true;
}

// response_format: {"type": "text"} (the default) or {"type": "json_object"} (constrained
// decoding: the output is one JSON object). json_schema is refused by name.
bool ReadResponseFormat(const json& body, bool* json_object, ApiError* error) {
  auto it = body.find("response_format");
  if (it == body.end() || it->is_null()) return true;
  const auto type = it->is_object() ? it->find("type") : it->end();
  if (!it->is_object() || type == it->end() || !type->is_string()) {
    *error = BadRequest(
        "'response_format' must be an object with a string 'type': {\"type\": \"text\"} or "
        "{\"type\": \"json_object\"}",
        "response_format");
    return false;
  }
  if (*type == "text") return true;
  if (*type == "json_object") {
    *json_object = true;
    return true;
  }
  if (*type == "json_schema") {
    *error = BadRequest(
        "response_format {\"type\": \"json_schema\"} is not supported by this server; "
        "{\"type\": \"json_object\"} is (any JSON object, no schema)",
        "response_format", "unsupported_parameter");
    return false;
  }
  *error = BadRequest("response_format type must be \"text\" or \"json_object\"", "response_format",
                      "unsupported_parameter");
  return false;
}

// Completions: logprobs N (0..20, null: none) and echo. Chat: logprobs true/false and
// top_logprobs N, which needs logprobs (OpenAI refuses it alone).
bool ReadLogprobs(Endpoint endpoint, const json& body, ParsedRequest* r, ApiError* error) {
  int64_t n = -1;
  if (endpoint == Endpoint::kCompletions) {
    if (!ReadInt(body, "logprobs", 0, engine::kMaxTopLogprobs, &n, error)) return false;
    if (!ReadBool(body, "echo", &r->echo, error)) return false;
    if (body.contains("top_logprobs") && !body["top_logprobs"].is_null()) {
      *error =
          BadRequest("'top_logprobs' is a chat parameter; completions take 'logprobs': N", "top_logprobs");
      return false;
    }
  } else {
    bool on = false;
    if (!ReadBool(body, "logprobs", &on, error)) return false;
    if (!ReadInt(body, "top_logprobs", 0, engine::kMaxTopLogprobs, &n, error)) return false;
    if (n >= 0 && !on) {
      *error = BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
      return false;
    }
    if (on && n < 0) n = 0;
    if (body.contains("echo") && !body["echo"].is_null() && body["echo"] != false) {
      *error = BadRequest("'echo' is a completions parameter", "echo", "unsupported_parameter");
      return false;
    }
  }
  r->logprobs = static_cast<int>(n);
  return true;
}

}  // namespace

bool ParseRequest(Endpoint endpoint, const json& body, const tokenizer::Tokenizer& tok,
                  const ChatFormat& chat, const ApiLimits& limits, const engine::SamplingParams& defaults,
                  ParsedRequest* out, ApiError* error) {
  if (!body.is_object()) {
    *error = BadRequest("the request body must be a JSON object");
    return false;
  }
  ParsedRequest r;
  r.endpoint = endpoint;
  r.sampling = defaults;
  if (!ReadString(body, "model", &r.model, error)) return false;
  if (!RejectUnsupported(body, error)) return false;
  if (!ReadResponseFormat(body, &r.json_object, error)) return false;
  if (endpoint == Endpoint::kChat) {
    if (!ChatPrompt(body, tok, chat, &r.prompt, error)) return false;
  } else {
    if (!CompletionPrompt(body, tok, &r.prompt, error)) return false;
    if (const auto it = body.find("prompt"); it != body.end()) {
      const json* p = &*it;
      if (p->is_array() && p->size() == 1) p = &(*p)[0];
      if (p->is_string())
        r.prompt_text = p->get<std::string>();
      else
        r.prompt_text = tok.Decode(r.prompt);
    }
  }
  const char* prompt_param = endpoint == Endpoint::kChat ? "messages" : "prompt";
  const int64_t n_prompt = static_cast<int64_t>(r.prompt.size());
  if (n_prompt == 0) {
    *error = BadRequest("the prompt is empty", prompt_param);
    return false;
  }
  if (n_prompt >= limits.n_ctx) {
    *error = BadRequest(
        fmt::format("This model's maximum context length is {} tokens, but the prompt has {} tokens",
                    limits.n_ctx, n_prompt),
        prompt_param, "context_length_exceeded");
    return false;
  }
  if (limits.max_prompt_tokens > 0 && n_prompt > limits.max_prompt_tokens) {
    *error = BadRequest(fmt::format("the prompt has {} tokens; this server accepts at most {} prompt tokens",
                                    n_prompt, limits.max_prompt_tokens),
                        prompt_param, "prompt_too_long");
    return false;
  }
  // The most tokens one request may hold: the context, or what the KV pool holds for one.
  const int64_t pool = limits.max_sequence_tokens > 0 ? limits.max_sequence_tokens : limits.n_ctx;
  const int64_t most = std::min<int64_t>(limits.n_ctx, pool);
  if (n_prompt >= most) {
    *error = BadRequest(
        fmt::format("the prompt has {} tokens; the KV cache holds at most {} tokens for one request "
                    "(the prompt and at least one generated token)",
                    n_prompt, most),
        prompt_param, "context_length_exceeded");
    return false;
  }
  // Tokens to generate: the request's, which must fit (as vLLM and OpenAI answer, rather than
  // failing or cutting it later), or the endpoint's default cut to what fits.
  const int64_t room = most - n_prompt;
  const char* max_name = endpoint == Endpoint::kChat && body.contains("max_completion_tokens")
                             ? "max_completion_tokens"
                             : "max_tokens";
  int64_t max_tokens = -1;
  if (!ReadInt(body, max_name, 1, limits.max_tokens, &max_tokens, error)) return false;
  if (max_tokens < 0) {
    max_tokens = limits.default_max_tokens > 0        ? limits.default_max_tokens
                 : endpoint == Endpoint::kCompletions ? 16
                                                      : room;
    max_tokens = std::min<int64_t>({max_tokens, limits.max_tokens, room});
  } else if (max_tokens > room) {
    const std::string holds =
        most < limits.n_ctx ? fmt::format("The KV cache holds {} tokens for one request (the context is {})",
                                          most, limits.n_ctx)
                            : fmt::format("This model's maximum context length is {} tokens", most);
    *error = BadRequest(
        fmt::format("{}. However, you requested {} tokens ({} in the {}, {} in the completion). "
                    "Please reduce the length of the {} or {}.",
                    holds, n_prompt + max_tokens, n_prompt, prompt_param, max_tokens, prompt_param, max_name),
        max_name, "context_length_exceeded");
    return false;
  }
  r.max_tokens = static_cast<int>(max_tokens);
  int64_t n = 1;
  if (!ReadInt(body, "n", 1, limits.max_n, &n, error)) return false;
  r.n = static_cast<int>(n);
  if (!ReadBool(body, "stream", &r.stream, error)) return false;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      *error = BadRequest("'stream_options' must be an object", "stream_options");
      return false;
    }
    if (!ReadBool(*it, "include_usage", &r.include_usage, error)) return false;
  }
  if (!ReadNumber(body, "temperature", 0, 2, &r.sampling.temperature, error)) return false;
  if (!ReadNumber(body, "top_p", 1e-6, 1, &r.sampling.top_p, error)) return false;
  if (!ReadNumber(body, "min_p", 0, 0.999999, &r.sampling.min_p, error)) return false;
  if (!ReadNumber(body, "repeat_penalty", 1e-3, 100, &r.sampling.repeat_penalty, error)) return false;
  // vLLM's name for llama.cpp's repeat_penalty.
  if (!ReadNumber(body, "repetition_penalty", 1e-3, 100, &r.sampling.repeat_penalty, error)) return false;
  if (!ReadNumber(body, "frequency_penalty", -2, 2, &r.sampling.frequency_penalty, error)) return false;
  if (!ReadNumber(body, "presence_penalty", -2, 2, &r.sampling.presence_penalty, error)) return false;
  if (!ReadLogprobs(endpoint, body, &r, error)) return false;
  int64_t top_k = r.sampling.top_k;
  if (!ReadInt(body, "top_k", 0, 1 << 30, &top_k, error)) return false;
  r.sampling.top_k = static_cast<int>(top_k);
  int64_t seed = 0;
  if (body.contains("seed") && !body["seed"].is_null()) {
    if (!ReadInt(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                 &seed, error)) {
      return false;
    }
    r.sampling.seed = static_cast<uint64_t>(seed);
    r.seed_given = true;
  }
  if (!ReadStop(body, limits, &r.stop, error)) return false;
  if (!ReadString(body, "cache_salt", &r.cache_salt, error)) return false;
  if (!ReadBool(body, "ignore_eos", &r.ignore_eos, error)) return false;
  *out = std::move(r);
  return true;
}

json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}}};
}

json CompletionResponse(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                        const std::vector<ChoiceResult>& choices, const json& usage) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i}, {"logprobs", choices[i].logprobs}, {"finish_reason", choices[i].finish_reason}};
    if (endpoint == Endpoint::kChat) {
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    } else {
      c["text"] = choices[i].text;
    }
    cs.push_back(std::move(c));
  }
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", std::move(cs)},
          {"usage", usage}};
}

json StreamChunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                 int index, const std::string& text, const std::string& finish_reason, bool first,
                 const json& logprobs) {
  json c = {{"index", index}, {"logprobs", logprobs}};
  c["finish_reason"] = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  if (endpoint == Endpoint::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.empty())) delta["content"] = text;
    c["delta"] = std::move(delta);
  } else {
    c["text"] = text;
  }
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array({std::move(c)})}};
}

json UsageChunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                const json& usage) {
  return {{"id", id},
          {"object", endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage}};
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace slimkv::server
