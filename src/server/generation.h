// One /v1/completions or /v1/chat/completions request after it is parsed: its choices go to
// the scheduler, their outputs come back as one JSON response or as server-sent events.
//
// Threads: Run is called on a worker (it submits); every output, the client going away and
// the time limit are handled on the connection's thread (Exchange::Post), so the state
// below needs no lock. The choices are cancelled when the client goes away (streaming or
// not: the connection reads on while it waits) and when --request-timeout passes.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/scheduler.h"
#include "server/http_message.h"
#include "server/openai_api.h"

namespace slimkv::server {

struct GenerationOptions {
  std::string id;                  // "chatcmpl-..." / "cmpl-..."
  std::string model;               // the model id in responses
  int64_t created = 0;             // Unix seconds
  uint64_t cache_salt = 0;         // engine::TenantSalt of the tenant and the request's cache_salt
  double keepalive_seconds = 1.0;  // SSE comment while a stream has nothing to send
  double time_limit_seconds = 0;   // 0: none
  std::vector<std::pair<std::string, std::string>> headers;  // added to the response (CORS)
};

class GenerationCall : public std::enable_shared_from_this<GenerationCall> {
 public:
  // `seeds` gives one seed per choice when the request has none.
  static void Run(engine::Scheduler& scheduler, ParsedRequest request, GenerationOptions options,
                  std::shared_ptr<Exchange> exchange, const std::function<uint64_t()>& seeds);

  GenerationCall(engine::Scheduler& scheduler, ParsedRequest request, GenerationOptions options,
                 std::shared_ptr<Exchange> exchange);

 private:
  struct Pending {
    int index;
    engine::RequestOutput output;
  };
  void Started(std::vector<engine::RequestId> ids);
  void Failed(std::vector<engine::RequestId> ids, const Status& status);
  void OnOutput(int index, const engine::RequestOutput& out);
  void Handle(int index, const engine::RequestOutput& out);
  void HandleWhole(int index, const engine::RequestOutput& out);
  void HandleStream(int index, const engine::RequestOutput& out);
  void CancelAll();
  void SendEvent(const nlohmann::json& j);
  std::string FinishReason(const engine::RequestOutput& out) const;
  HttpResponse Json(int status, std::string body) const;

  engine::Scheduler& scheduler_;
  ParsedRequest request_;
  GenerationOptions options_;
  std::shared_ptr<Exchange> exchange_;
  // Connection thread only.
  std::vector<engine::RequestId> ids_;
  std::vector<Pending> pending_;  // outputs that came before Started
  bool started_ = false, failed_ = false, done_ = false;
  bool gone_ = false, timed_out_ = false;
  std::vector<ChoiceResult> choices_;
  int finished_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
  Status failure_;
};

}  // namespace slimkv::server
