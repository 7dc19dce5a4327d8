// The OpenAI wire format without sockets: request parsing and its errors, response and
// chunk shapes, error objects, and the Prometheus text of the metrics.
#include "server/openai_api.h"

#include <gtest/gtest.h>

#include <cstring>
#include <regex>
#include <set>
#include <sstream>

#include "gguf/gguf_file.h"
#include "server/metrics.h"
#include "test_util.h"

namespace slimkv::server {
namespace {

using nlohmann::json;

class OpenAiApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
    auto file = gguf::GgufFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    file_ = std::make_unique<gguf::GgufFile>(std::move(file).value());
    auto tok = tokenizer::Tokenizer::FromGguf(*file_);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tok_ = std::move(tok).value();
    auto style = tokenizer::DetectChatStyle(*tok_);
    ASSERT_TRUE(style.ok());
    chat_ = {*style, tok_->chat_template()};
    limits_.n_ctx = 64;
    limits_.max_tokens = 100;
  }

  bool Parse(Endpoint ep, const std::string& body, ParsedRequest* r, ApiError* e) {
    return ParseRequest(ep, json::parse(body), *tok_, chat_, limits_, engine::SamplingParams{}, r, e);
  }
  ApiError ParseError(Endpoint ep, const std::string& body) {
    ParsedRequest r;
    ApiError e;
    EXPECT_FALSE(Parse(ep, body, &r, &e)) << body;
    return e;
  }

  std::unique_ptr<gguf::GgufFile> file_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
  ChatFormat chat_;
  ApiLimits limits_;
};

TEST_F(OpenAiApiTest, CompletionRequests) {
  ParsedRequest r;
  ApiError e;
  ASSERT_TRUE(Parse(Endpoint::kCompletions, R"({"model": "x", "prompt": "Hello there"})", &r, &e))
      << e.message;
  EXPECT_EQ(r.prompt, tok_->Encode("Hello there", tok_->add_bos_default(), false));
  EXPECT_EQ(r.max_tokens, 16);  // OpenAI's default for completions
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.seed_given);
  ASSERT_TRUE(Parse(Endpoint::kCompletions,
                    R"({"prompt": ["Hi"], "max_tokens": 30, "temperature": 0, "top_p": 0.5, "seed": 7, "n": 2,
                        "stop": ["\n", "END"], "stream": true, "stream_options": {"include_usage": true},
                        "cache_salt": "tenant", "top_k": 5, "min_p": 0.1, "logprobs": null, "echo": false})",
                    &r, &e))
      << e.message;
  EXPECT_EQ(r.max_tokens, 30);
  EXPECT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 5);
  EXPECT_EQ(r.sampling.seed, 7u);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(r.cache_salt, "tenant");
  // Token ids; max_tokens up to exactly what the context has room for.
  ASSERT_TRUE(Parse(Endpoint::kCompletions, R"({"prompt": [1, 2, 3], "max_tokens": 61})", &r, &e))
      << e.message;
  EXPECT_EQ(r.prompt, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(r.max_tokens, 61);
}

// Issue 12, finding 7: a prompt + max_tokens that cannot fit is refused up front, naming
// every number (as vLLM does), instead of running until the pool is full and failing.
TEST_F(OpenAiApiTest, MaxTokensThatCannotFitAreRefusedUpFront) {
  ApiError e = ParseError(Endpoint::kCompletions, R"({"prompt": [1, 2, 3], "max_tokens": 62})");
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_EQ(e.param, "max_tokens");
  for (const char* n : {"64", "65", "3", "62"})
    EXPECT_NE(e.message.find(n), std::string::npos) << n << ": " << e.message;
  // The KV pool holds 20 tokens for one request: the pool, not the context, is the limit.
  limits_.max_sequence_tokens = 20;
  e = ParseError(Endpoint::kCompletions, R"({"prompt": [1, 2, 3], "max_tokens": 18})");
  EXPECT_EQ(e.code, "context_length_exceeded");
  for (const char* n : {"20", "21", "3", "18", "64"})
    EXPECT_NE(e.message.find(n), std::string::npos) << n << ": " << e.message;
  ParsedRequest r;
  ASSERT_TRUE(Parse(Endpoint::kCompletions, R"({"prompt": [1, 2, 3], "max_tokens": 17})", &r, &e))
      << e.message;
  EXPECT_EQ(r.max_tokens, 17);
  // Omitted, the default is cut to what fits: chat's "rest of the context" becomes the rest
  // of what the pool holds, and the request ends with "length" there.
  limits_.max_sequence_tokens = 40;
  ASSERT_TRUE(Parse(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "Hi"}]})", &r, &e))
      << e.message;
  EXPECT_EQ(r.max_tokens, 40 - static_cast<int>(r.prompt.size()));
  limits_.max_sequence_tokens = 20;
  // A prompt the pool cannot hold with one generated token.
  e = ParseError(Endpoint::kCompletions, json{{"prompt", std::vector<int>(20, 1)}}.dump());
  EXPECT_EQ(e.code, "context_length_exceeded");
  EXPECT_NE(e.message.find("20"), std::string::npos) << e.message;
}

// Issue 12, finding 5: wrong types inside content parts and response_format were 500s with
// the JSON library's exception text. Every malformed body is a 400 naming the field, and
// ParseRequest never throws.
TEST_F(OpenAiApiTest, WrongTypesAnywhereAre400sNeverExceptions) {
  for (const char* body :
       {R"({"messages": [{"role": "user", "content": [{"type": 5}]}]})",
        R"({"messages": [{"role": "user", "content": [{"type": null, "text": "x"}]}]})",
        R"({"messages": [{"role": "user", "content": [{"type": ["text"], "text": "x"}]}]})",
        R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})",
        R"({"messages": [{"role": "user", "content": [5]}]})",
        R"({"messages": [{"role": "user", "content": {"type": "text"}}]})",
        R"({"messages": [{"role": 5, "content": "x"}]})",
        R"({"messages": [null]})",
        R"({"messages": "x", "response_format": {"type": 5}})",
        R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": 5}})",
        R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": null}})",
        R"({"messages": [{"role": "user", "content": "x"}], "response_format": "json"})",
        R"({"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}})",
        R"({"messages": [{"role": "user", "content": "x"}], "stop": [1]})",
        R"({"messages": [{"role": "user", "content": "x"}], "seed": 1.5})",
        R"({"messages": [{"role": "user", "content": "x"}], "seed": 18446744073709551615})",
        R"({"messages": [{"role": "user", "content": "x"}], "n": -1})",
        R"({"messages": [{"role": "user", "content": "x"}], "best_of": "2"})",
        R"({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 5}})",
        R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 1e300})",
        R"({"messages": [{"role": "user", "content": "x"}], "top_k": -5})",
        R"({"messages": [{"role": "user", "content": "x"}], "cache_salt": 7})"}) {
    SCOPED_TRACE(body);
    ParsedRequest r;
    ApiError e;
    bool ok = true;
    ASSERT_NO_THROW(ok = ParseRequest(Endpoint::kChat, json::parse(body), *tok_, chat_, limits_,
                                      engine::SamplingParams{}, &r, &e));
    if (ok) continue;  // the seed as an unsigned 64-bit number is a valid seed
    EXPECT_EQ(e.http_status, 400);
    EXPECT_EQ(e.message.find("json.exception"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("type_error"), std::string::npos) << e.message;
  }
  // Nested a hundred thousand deep: parsed without recursion, refused, destroyed.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const json j = json::parse(deep, nullptr, false);
  ParsedRequest r;
  ApiError e;
  EXPECT_FALSE(
      ParseRequest(Endpoint::kCompletions, j, *tok_, chat_, limits_, engine::SamplingParams{}, &r, &e));
  EXPECT_EQ(e.http_status, 400);
}

TEST_F(OpenAiApiTest, ChatRequestsUseTheTemplate) {
  ParsedRequest r;
  ApiError e;
  ASSERT_TRUE(Parse(Endpoint::kChat,
                    R"({"messages": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                        "max_completion_tokens": 5})",
                    &r, &e))
      << e.message;
  const std::string text = tokenizer::ApplyChatTemplate(chat_.style, chat_.template_text,
                                                        {{"system", "Be brief."}, {"user", "Hi"}}, true);
  auto want = tok_->Encode(text, tok_->add_bos_default(), true);
  if (want.size() >= 2 && want[0] == tok_->bos() && want[1] == tok_->bos()) want.erase(want.begin());
  EXPECT_EQ(r.prompt, want);
  EXPECT_EQ(r.max_tokens, 5);
  // Without max_tokens, chat may use the rest of the context.
  ASSERT_TRUE(Parse(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "Hi"}]})", &r, &e));
  EXPECT_EQ(r.max_tokens, 64 - static_cast<int>(r.prompt.size()));
}

// Issue 16: response_format json_object is constrained decoding, on both endpoints.
TEST_F(OpenAiApiTest, ResponseFormatJsonObjectIsAccepted) {
  ParsedRequest r;
  ApiError e;
  ASSERT_TRUE(
      Parse(Endpoint::kCompletions, R"({"prompt": "x", "response_format": {"type": "json_object"}})", &r, &e))
      << e.message;
  EXPECT_TRUE(r.json_object);
  ASSERT_TRUE(Parse(Endpoint::kChat,
                    R"({"messages": [{"role": "user", "content": "x"}], "stream": true,
                        "response_format": {"type": "json_object"}})",
                    &r, &e))
      << e.message;
  EXPECT_TRUE(r.json_object);
  for (const char* body : {R"({"prompt": "x", "response_format": {"type": "text"}})",
                           R"({"prompt": "x", "response_format": null})", R"({"prompt": "x"})"}) {
    ASSERT_TRUE(Parse(Endpoint::kCompletions, body, &r, &e)) << body << ": " << e.message;
    EXPECT_FALSE(r.json_object) << body;
  }
}

TEST_F(OpenAiApiTest, BadRequestsNameTheField) {
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"model": "x"})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": 5})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": ["a", "b"]})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": [1, 99999999]})").param, "prompt");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": 0})").param, "max_tokens");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": 101})").param, "max_tokens");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": "5"})").param, "max_tokens");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": 1e40})").param, "max_tokens");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "n": 5})").param, "n");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "temperature": -1})").param, "temperature");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "top_p": 0})").param, "top_p");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "stream": "yes"})").param, "stream");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "stop": ["a","b","c","d","e"]})").param,
            "stop");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "suffix": "y"})").code,
            "unsupported_parameter");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "logprobs": 21})").param, "logprobs");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "top_logprobs": 2})").param,
            "top_logprobs");
  EXPECT_EQ(
      ParseError(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})")
          .param,
      "top_logprobs");
  EXPECT_EQ(
      ParseError(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x"}], "echo": true})").param,
      "echo");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "presence_penalty": 2.5})").param,
            "presence_penalty");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"({"prompt": "x", "frequency_penalty": -3})").param,
            "frequency_penalty");
  // response_format: text and json_object are taken; json_schema is refused by name, other types too.
  const ApiError schema = ParseError(
      Endpoint::kChat,
      R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})");
  EXPECT_EQ(schema.param, "response_format");
  EXPECT_NE(schema.message.find("\"json_schema\"} is not supported"), std::string::npos) << schema.message;
  const ApiError other =
      ParseError(Endpoint::kCompletions, R"({"prompt": "x", "response_format": {"type": "yaml"}})");
  EXPECT_EQ(other.param, "response_format");
  EXPECT_NE(other.message.find("\"text\" or \"json_object\""), std::string::npos) << other.message;
  EXPECT_EQ(ParseError(Endpoint::kChat, R"({"messages": []})").param, "messages");
  EXPECT_EQ(ParseError(Endpoint::kChat, R"({"messages": [{"role": "wizard", "content": "x"}]})").param,
            "messages[0].role");
  EXPECT_EQ(
      ParseError(Endpoint::kChat, R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})")
          .param,
      "messages[0].content");
  EXPECT_EQ(ParseError(Endpoint::kCompletions, R"([1, 2])").http_status, 400);
  // A prompt longer than the context: 400 naming both lengths.
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += " word";
  const ApiError e = ParseError(Endpoint::kCompletions, json{{"prompt", long_prompt}}.dump());
  EXPECT_EQ(e.http_status, 400);
  EXPECT_EQ(e.code, "context_length_exceeded");
  const size_t n = tok_->Encode(long_prompt, tok_->add_bos_default(), false).size();
  EXPECT_NE(e.message.find("64"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find(std::to_string(n)), std::string::npos) << e.message;
}

TEST_F(OpenAiApiTest, ResponsesAndChunks) {
  const json usage = UsageJson(10, 5, 4);
  EXPECT_EQ(usage["total_tokens"], 15);
  EXPECT_EQ(usage["prompt_tokens_details"]["cached_tokens"], 4);
  json r = CompletionResponse(Endpoint::kChat, "id1", 123, "m", {{"Hello", "stop"}}, usage);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "Hello");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  r = CompletionResponse(Endpoint::kCompletions, "id2", 123, "m", {{"a", "length"}, {"b", "stop"}}, usage);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][1]["text"], "b");
  EXPECT_EQ(r["choices"][1]["index"], 1);
  json c = StreamChunk(Endpoint::kChat, "id", 1, "m", 0, "", "", true);
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  c = StreamChunk(Endpoint::kChat, "id", 1, "m", 0, "", "length", false);
  EXPECT_EQ(c["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(c["choices"][0]["delta"].empty());
  c = UsageChunk(Endpoint::kCompletions, "id", 1, "m", usage);
  EXPECT_TRUE(c["choices"].empty());
  EXPECT_EQ(c["usage"]["completion_tokens"], 5);
  // Invalid UTF-8 never throws on the way out.
  EXPECT_NO_THROW(Dump(json{{"text", std::string("\xff\xfe")}}));
}

// Each of `lines` is a whole line of the exposition `text`.
void ExpectSamples(const std::string& text, std::initializer_list<const char*> lines) {
  for (const char* line : lines) EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line;
}

TEST(ApiErrorTest, StatusesMapToHttpCodes) {
  EXPECT_EQ(FromStatus(InvalidArgument("x")).http_status, 400);
  EXPECT_EQ(FromStatus(OutOfRange("x")).http_status, 400);
  EXPECT_EQ(FromStatus(ResourceExhausted("x")).http_status, 429);
  EXPECT_EQ(FromStatus(Status(StatusCode::kCancelled, "x")).http_status, 503);
  EXPECT_EQ(FromStatus(Internal("x")).http_status, 500);
  const json j = json::parse(ApiError{404, "no", "not_found_error", "", ""}.ToJson());
  ASSERT_TRUE(j.contains("error"));
  for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k)) << k;
  EXPECT_TRUE(j["error"]["param"].is_null());
}

TEST(MetricsTest, PrometheusTextFormat) {
  engine::SchedulerStats s;
  s.kv_budget_bytes = 1000;
  s.kv_bytes_used = 250;
  s.running = 3;
  s.prefix_lookups = 4;
  s.prefix_hits = 3;
  s.ttft.Observe(0.02);
  s.ttft.Observe(0.3);
  s.ttft.Observe(100);
  const std::string text = PrometheusText(s, "model");
  // Every sample line is "name[{labels}] value", every metric has HELP and TYPE first.
  const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_]+="[^"]*"(,[a-zA-Z_]+="[^"]*")*\})? (\S+)$)");
  std::istringstream in(text);
  std::string line;
  std::set<std::string> typed;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      EXPECT_TRUE(type == "gauge" || type == "counter" || type == "histogram") << line;
      if (type == "counter") EXPECT_TRUE(name.ends_with("_total")) << name;
      typed.insert(name);
      continue;
    }
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, sample)) << line;
    std::string base = m[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (base.ends_with(suffix) && !typed.count(base))
        base = base.substr(0, base.size() - std::strlen(suffix));
    EXPECT_TRUE(typed.count(base)) << "no TYPE before " << line;
    EXPECT_NO_THROW(std::stod(m[4].str())) << line;
    ++samples;
  }
  EXPECT_GT(samples, 30);
  EXPECT_NE(text.find("slimkv_kv_bytes_used 250\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_kv_bytes_free 750\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_prefix_cache_hit_rate 0.75\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_requests_running 3\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_time_to_first_token_seconds_bucket{le=\"0.5\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("slimkv_time_to_first_token_seconds_count 3\n"), std::string::npos);
  const json j = StatsJson(s, "model");
  EXPECT_EQ(j["running"], 3);
  EXPECT_DOUBLE_EQ(j["prefix_hit_rate"].get<double>(), 0.75);
}

// Issue 12, finding 11: the quantities vLLM exports, under vLLM's names with a model_name
// label, beside slimkv's own; label values escaped; the HTTP layer's counters.
TEST(MetricsTest, VllmNamesBesideOurs) {
  engine::SchedulerStats s;
  s.kv_budget_bytes = 1000;
  s.kv_bytes_used = 250;
  s.running = 3;
  s.waiting = 2;
  s.prompt_tokens = 100;
  s.prompt_tokens_cached = 64;
  s.itl.Observe(0.02);
  s.ttft.Observe(0.3);
  s.queue.Observe(0.004);
  s.prefill.Observe(0.2);
  s.decode.Observe(2.0);
  s.inference.Observe(2.2);
  const HttpStats http{.open = 7, .accepted = 9, .refused = 1, .timed_out = 2, .rejected = 3};
  const std::string text = PrometheusText(s, "my \"model\"", &http);
  const std::string label = R"(model_name="my \"model\"")";
  for (const std::string& line :
       {"vllm:num_requests_running{" + label + "} 3", "vllm:num_requests_waiting{" + label + "} 2",
        "vllm:kv_cache_usage_perc{" + label + "} 0.25", "vllm:prefix_cache_queries_total{" + label + "} 100",
        "vllm:prefix_cache_hits_total{" + label + "} 64",
        "vllm:time_to_first_token_seconds_bucket{le=\"0.5\"," + label + "} 1",
        "vllm:time_to_first_token_seconds_count{" + label + "} 1",
        "vllm:inter_token_latency_seconds_bucket{le=\"0.025\"," + label + "} 1",
        "vllm:request_queue_time_seconds_bucket{le=\"0.005\"," + label + "} 1",
        "vllm:request_queue_time_seconds_bucket{le=\"0.0025\"," + label + "} 0",
        "vllm:request_prefill_time_seconds_bucket{le=\"0.25\"," + label + "} 1",
        "vllm:request_decode_time_seconds_bucket{le=\"1\"," + label + "} 0",
        "vllm:request_decode_time_seconds_sum{" + label + "} 2",
        "vllm:request_inference_time_seconds_bucket{le=\"2.5\"," + label + "} 1",
        "vllm:request_inference_time_seconds_count{" + label + "} 1",
        std::string("slimkv_info{model=\"my \\\"model\\\"\",kv_format=\"\"} 1"),
        std::string("slimkv_http_connections 7"), std::string("slimkv_http_connections_refused_total 1"),
        std::string("slimkv_http_timeouts_total 2")}) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << line;
  }
  EXPECT_NE(text.find("# TYPE vllm:prefix_cache_hits_total counter\n"), std::string::npos);
}

// The KV tiers: one series per tier (ram, then the lower tiers), the disk's condition as an enum, the
// swap-or-recompute counters; Redis leaves out what it does not report (blocks, bytes held).
TEST(MetricsTest, KvTierSeries) {
  engine::SchedulerStats s;
  s.prefix_sharing = true;
  s.prefix.ram_hit_blocks = 12;
  s.prefix.ram_miss_blocks = 5;
  s.prefix.cached_blocks = 9;
  s.prefix.bytes_held = 4096;
  s.prefix.tier_blocks = 3;
  kv::tiers::TierStats disk{.gets = 5,
                            .hits = 3,
                            .corrupt = 1,
                            .entries = 7,
                            .bytes_held = 7000,
                            .bytes_read = 3000,
                            .bytes_written = 7000};
  disk.condition = "full";
  kv::tiers::TierStats redis{.gets = 2, .hits = 0, .fast_failures = 2};
  redis.condition = "unreachable";
  s.tiers = {{"disk", disk}, {"redis", redis}};
  s.tier_stack.loaded = 3;
  s.tier_stack.prefetches = 2;
  s.tier_stack.prefetch_hits = 3;
  s.tier_stack.prefetch_unused = 1;
  s.swap.fetch_chosen = 4;
  s.swap.recompute_chosen = 1;
  s.swap.probes = 1;
  s.preempted_tokens_swapped = 64;
  s.preempted_tokens_recomputed = 16;
  const std::string text = PrometheusText(s, "model");
  ExpectSamples(text, {R"(slimkv_kv_tier_hits_total{tier="ram"} 12)",
                       R"(slimkv_kv_tier_hits_total{tier="disk"} 3)",
                       R"(slimkv_kv_tier_hits_total{tier="redis"} 0)",
                       R"(slimkv_kv_tier_misses_total{tier="ram"} 5)",
                       R"(slimkv_kv_tier_misses_total{tier="disk"} 2)",
                       R"(slimkv_kv_tier_blocks{tier="ram"} 9)",
                       R"(slimkv_kv_tier_blocks{tier="disk"} 7)",
                       R"(slimkv_kv_tier_bytes{tier="ram"} 4096)",
                       R"(slimkv_kv_tier_bytes{tier="disk"} 7000)",
                       R"(slimkv_kv_tier_read_bytes_total{tier="disk"} 3000)",
                       R"(slimkv_kv_tier_corrupt_total{tier="disk"} 1)",
                       R"(slimkv_kv_tier_fast_failures_total{tier="redis"} 2)",
                       R"(slimkv_kv_tier_state{tier="disk",state="full"} 1)",
                       R"(slimkv_kv_tier_state{tier="disk",state="ok"} 0)",
                       R"(slimkv_kv_tier_state{tier="redis",state="unreachable"} 1)",
                       "slimkv_kv_tier_records_loaded_total 3",
                       "slimkv_kv_tier_blocks_fetched_total 3",
                       "slimkv_kv_tier_read_aheads_total 2",
                       R"(slimkv_kv_tier_read_ahead_records_total{outcome="hit"} 3)",
                       R"(slimkv_kv_tier_read_ahead_records_total{outcome="unused"} 1)",
                       R"(slimkv_kv_tier_fetch_decisions_total{decision="fetch"} 4)",
                       R"(slimkv_kv_tier_fetch_decisions_total{decision="recompute"} 1)",
                       "slimkv_kv_tier_fetch_probes_total 1",
                       R"(slimkv_preempted_tokens_total{path="swap"} 64)",
                       R"(slimkv_preempted_tokens_total{path="recompute"} 16)"});
  EXPECT_EQ(text.find(R"(slimkv_kv_tier_blocks{tier="redis"})"), std::string::npos);
  EXPECT_EQ(text.find("# TYPE slimkv_kv_tier_hits_total counter\n"),
            text.rfind("# TYPE slimkv_kv_tier_hits_total"));
  // Without prefix sharing or tiers: no tier series at all.
  const std::string none = PrometheusText(engine::SchedulerStats{}, "model");
  EXPECT_EQ(none.find("slimkv_kv_tier_"), std::string::npos);
  EXPECT_EQ(none.find("slimkv_kv_recall_"), std::string::npos);  // only under a :recall policy
}

// Under a :recall policy /metrics shows the blocks moved and the fetch-ahead outcomes.
TEST(MetricsTest, RecallSeries) {
  engine::SchedulerStats s;
  s.recall = true;
  s.eviction.offloaded = 40;
  s.eviction.fetched = 12;
  s.eviction.fetch_used = 9;
  s.eviction.fetch_missed = 3;
  s.eviction.host_bytes = 4096;
  s.eviction.host_dropped = 5;
  s.eviction.spilled = 7;
  s.eviction.spill_read = 4;
  s.eviction.spill_lost = 1;
  const std::string text = PrometheusText(s, "model");
  ExpectSamples(text, {R"(slimkv_kv_recall_blocks_total{move="offloaded"} 40)",
                       R"(slimkv_kv_recall_blocks_total{move="fetched"} 12)",
                       R"(slimkv_kv_recall_blocks_total{move="dropped"} 5)",
                       R"(slimkv_kv_recall_blocks_total{move="spilled"} 7)",
                       R"(slimkv_kv_recall_blocks_total{move="read_back"} 4)",
                       R"(slimkv_kv_recall_blocks_total{move="spill_lost"} 1)",
                       R"(slimkv_kv_recall_fetch_ahead_total{outcome="used"} 9)",
                       R"(slimkv_kv_recall_fetch_ahead_total{outcome="missed"} 3)",
                       "slimkv_kv_recall_host_bytes 4096"});
}

// With an eviction policy /metrics exports what it did; without one, none of these series.
TEST(MetricsTest, EvictionSeries) {
  engine::SchedulerStats s;
  s.eviction.tokens_evicted = 700;
  s.eviction.compactions = 6;
  s.eviction.block_passes = 20;
  s.eviction.blocks_dropped = 30;
  s.eviction.blocks_shortened = 2;
  s.eviction.merged = 5;
  s.eviction.tokens_moved = 64;
  s.eviction.sealed_reencoded = 16;
  EXPECT_EQ(PrometheusText(s, "model").find("slimkv_kv_evicted"), std::string::npos);
  s.evicting = true;
  const std::string text = PrometheusText(s, "model");
  ExpectSamples(text,
                {"slimkv_kv_evicted_tokens_total 700", R"(slimkv_kv_eviction_passes_total{level="token"} 6)",
                 R"(slimkv_kv_eviction_passes_total{level="block"} 20)",
                 R"(slimkv_kv_evicted_blocks_total{how="dropped"} 30)",
                 R"(slimkv_kv_evicted_blocks_total{how="shortened"} 2)", "slimkv_kv_merged_tokens_total 5",
                 R"(slimkv_kv_rewritten_tokens_total{why="compaction"} 64)",
                 R"(slimkv_kv_rewritten_tokens_total{why="merge"} 16)"});
  EXPECT_EQ(text.find("slimkv_kv_recall"), std::string::npos);  // recall's series only under :recall
}

// The dashboard's quantiles are quantiles, interpolated inside the bucket as Prometheus'
// histogram_quantile does, not the bucket's upper bound (which read 100 ms for any p50
// between 50 and 100 ms).
TEST(MetricsTest, QuantilesAreInterpolatedNotBucketBounds) {
  engine::LatencyHistogram h;
  for (int i = 0; i < 100; ++i) h.Observe(0.06);  // all in (0.05, 0.1]
  EXPECT_NEAR(h.Quantile(0.5), 0.075, 1e-12);
  EXPECT_NEAR(h.Quantile(0.99), 0.0995, 1e-12);
  engine::LatencyHistogram g;
  for (int i = 0; i < 50; ++i) g.Observe(0.0005);  // (0, 0.001]
  for (int i = 0; i < 50; ++i) g.Observe(0.2);     // (0.1, 0.25]
  EXPECT_NEAR(g.Quantile(0.25), 0.0005, 1e-12);
  EXPECT_NEAR(g.Quantile(0.75), 0.175, 1e-12);
  EXPECT_DOUBLE_EQ(engine::LatencyHistogram().Quantile(0.5), 0.0);
  engine::LatencyHistogram over;
  over.Observe(100);  // past the last bound: the last bound
  EXPECT_DOUBLE_EQ(over.Quantile(0.5), 30.0);
  const json j = StatsJson(
      [&] {
        engine::SchedulerStats s;
        s.ttft = h;
        return s;
      }(),
      "m");
  EXPECT_NEAR(j["ttft_p50"].get<double>(), 0.075, 1e-12);
}

}  // namespace
}  // namespace slimkv::server
