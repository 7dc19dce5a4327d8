#include "server/generation.h"

#include "base/log.h"
#include "server/logprobs_json.h"

namespace slimkv::server {
namespace {

using nlohmann::json;

constexpr char kKeepalive[] = ": keep-alive\n\n";

// A choice that failed after it was queued: a server error, never 429 (a client must not
// retry a request that already ran).
ApiError FailureError(const Status& st) {
  if (st.code() == StatusCode::kCancelled) return FromStatus(st);
  return ApiError{500, st.message(), "server_error", "", "generation_failed"};
}

}  // namespace

GenerationCall::GenerationCall(engine::Scheduler& scheduler, ParsedRequest request, GenerationOptions options,
                               std::shared_ptr<Exchange> exchange)
    : scheduler_(scheduler),
      request_(std::move(request)),
      options_(std::move(options)),
      exchange_(std::move(exchange)),
      choices_(request_.n),
      generated_lp_(request_.n),
      prompt_lp_(request_.n),
      echoed_(request_.n, false),
      sent_bytes_(request_.n, 0) {}

void GenerationCall::Run(engine::Scheduler& scheduler, ParsedRequest request, GenerationOptions options,
                         std::shared_ptr<Exchange> exchange, const std::function<uint64_t()>& seeds) {
  auto call = std::make_shared<GenerationCall>(scheduler, std::move(request), std::move(options), exchange);
  const ParsedRequest& pr = call->request_;
  std::vector<engine::RequestId> ids;
  for (int i = 0; i < pr.n; ++i) {
    engine::RequestParams p;
    p.prompt = pr.prompt;
    p.max_tokens = pr.max_tokens;
    p.sampling = pr.sampling;
    p.sampling.seed = pr.seed_given ? pr.sampling.seed + static_cast<uint64_t>(i) : seeds();
    p.stop = pr.stop;
    p.ignore_eos = pr.ignore_eos;
    p.json_object = pr.json_object;
    p.cache_salt = call->options_.cache_salt;
    p.logprobs = pr.logprobs;
    p.prompt_logprobs = pr.echo && pr.logprobs >= 0;
    // Engine thread: hand the output to the connection's thread, never block.
    p.on_output = [call, i](const engine::RequestOutput& out) {
      call->exchange_->Post([call, i, out] { call->OnOutput(i, out); });
    };
    auto id = scheduler.Submit(std::move(p));
    if (!id.ok()) {
      exchange->Post([call, ids, st = id.status()] { call->Failed(ids, st); });
      return;
    }
    ids.push_back(*id);
  }
  exchange->Post([call, ids = std::move(ids)]() mutable { call->Started(std::move(ids)); });
}

HttpResponse GenerationCall::Json(int status, std::string body) const {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = options_.headers;
  return r;
}

void GenerationCall::Failed(std::vector<engine::RequestId> ids, const Status& st) {
  failed_ = done_ = true;
  for (engine::RequestId id : ids) scheduler_.Cancel(id);
  const ApiError e = FromStatus(st, request_.endpoint == Endpoint::kChat ? "messages" : "prompt");
  HttpResponse r = Json(e.http_status, e.ToJson());
  if (e.http_status == 429) r.headers.emplace_back("Retry-After", "1");
  exchange_->Respond(std::move(r));
}

void GenerationCall::Started(std::vector<engine::RequestId> ids) {
  ids_ = std::move(ids);
  started_ = true;
  exchange_->OnClientGone([self = shared_from_this()] {
    self->gone_ = true;
    self->CancelAll();
  });
  if (options_.time_limit_seconds > 0) {
    exchange_->After(options_.time_limit_seconds, [self = shared_from_this()] {
      self->timed_out_ = true;
      self->CancelAll();
    });
  }
  if (request_.stream) {
    HttpResponse head = Json(200, "");
    head.content_type = "text/event-stream";
    head.headers.emplace_back("Cache-Control", "no-cache");
    head.headers.emplace_back("X-Accel-Buffering", "no");
    exchange_->BeginStream(std::move(head), options_.keepalive_seconds, kKeepalive);
    if (request_.endpoint == Endpoint::kChat) {  // the role comes first, as OpenAI sends it
      for (int i = 0; i < request_.n; ++i) {
        SendEvent(
            StreamChunk(request_.endpoint, options_.id, options_.created, options_.model, i, "", "", true));
      }
    }
  }
  std::vector<Pending> early = std::move(pending_);
  for (const Pending& p : early) Handle(p.index, p.output);
}

void GenerationCall::OnOutput(int index, const engine::RequestOutput& out) {
  if (failed_) return;
  if (!started_) {
    pending_.push_back({index, out});
    return;
  }
  Handle(index, out);
}

void GenerationCall::CancelAll() {
  for (engine::RequestId id : ids_) scheduler_.Cancel(id);  // finished ones are ignored
}

std::string GenerationCall::FinishReason(const engine::RequestOutput& out) const {
  // A request stopped by the time limit ends as if it had reached its length.
  if (out.finish_reason == engine::FinishReason::kCancelled && timed_out_) return "length";
  return engine::FinishReasonName(out.finish_reason);
}

void GenerationCall::Handle(int index, const engine::RequestOutput& out) {
  if (done_ || gone_) return;
  if (out.finished) {
    ++finished_;
    completion_tokens_ += out.usage.completion_tokens;
    if (index == 0) cached_tokens_ = out.usage.cached_tokens;
  }
  if (request_.stream) return HandleStream(index, out);
  HandleWhole(index, out);
}

json GenerationCall::LogprobsJson(const std::vector<engine::TokenLogprob>& prompt_logprobs,
                                  const std::vector<engine::TokenLogprob>& generated, bool with_prompt,
                                  size_t first_offset) const {
  if (request_.logprobs < 0 || options_.tokenizer == nullptr) return nullptr;
  if (request_.endpoint == Endpoint::kChat) return ChatLogprobsJson(*options_.tokenizer, generated);
  static const std::vector<int32_t> kNone;
  return CompletionLogprobsJson(*options_.tokenizer, with_prompt ? request_.prompt : kNone, prompt_logprobs,
                                generated, first_offset);
}

void GenerationCall::HandleWhole(int index, const engine::RequestOutput& out) {
  if (out.has_logprob) generated_lp_[index].push_back(out.logprob);
  if (!out.prompt_logprobs.empty()) prompt_lp_[index] = out.prompt_logprobs;
  if (!out.finished) {
    choices_[index].text += out.text;
    return;
  }
  choices_[index].finish_reason = FinishReason(out);
  if (out.finish_reason == engine::FinishReason::kError && failure_.ok()) {
    failure_ = out.error;
    CancelAll();  // the other choices would be thrown away
  }
  if (out.finish_reason == engine::FinishReason::kCancelled && !timed_out_ && failure_.ok()) {
    failure_ = Status(StatusCode::kCancelled, "cancelled: the server is shutting down");
  }
  if (finished_ < request_.n) return;
  done_ = true;
  if (!failure_.ok()) {
    const ApiError e = FailureError(failure_);
    return exchange_->Respond(Json(e.http_status, e.ToJson()));
  }
  if (timed_out_ && completion_tokens_ == 0) {
    const ApiError e{
        503,
        fmt::format("the request did not start within the time limit of {} s (--request-timeout)",
                    options_.time_limit_seconds),
        "server_error", "", "timeout"};
    return exchange_->Respond(Json(e.http_status, e.ToJson()));
  }
  for (int i = 0; i < request_.n; ++i) {
    if (request_.echo) choices_[i].text = request_.prompt_text + choices_[i].text;
    choices_[i].logprobs = LogprobsJson(prompt_lp_[i], generated_lp_[i], request_.echo, 0);
  }
  const json usage = UsageJson(static_cast<int>(request_.prompt.size()), completion_tokens_, cached_tokens_);
  exchange_->Respond(Json(200, Dump(CompletionResponse(request_.endpoint, options_.id, options_.created,
                                                       options_.model, choices_, usage))));
}

void GenerationCall::SendEvent(const json& j) { exchange_->Write("data: " + Dump(j) + "\n\n"); }

void GenerationCall::HandleStream(int index, const engine::RequestOutput& out) {
  const auto chunk = [&](const std::string& text, const std::string& finish, const json& logprobs) {
    return StreamChunk(request_.endpoint, options_.id, options_.created, options_.model, index, text, finish,
                       false, logprobs);
  };
  if (!out.finished) {
    // The echo (with the prompt's log-probabilities) comes with the first token.
    const bool echo = request_.echo && !echoed_[index];
    echoed_[index] = echoed_[index] || request_.echo;
    const std::string text = echo ? request_.prompt_text + out.text : out.text;
    std::vector<engine::TokenLogprob> generated;
    if (out.has_logprob) generated.push_back(out.logprob);
    if (!text.empty() || !generated.empty()) {
      SendEvent(chunk(text, "", LogprobsJson(out.prompt_logprobs, generated, echo, sent_bytes_[index])));
      // Offsets count token pieces, as the whole response's do.
      if (echo) {
        for (int32_t t : request_.prompt)
          sent_bytes_[index] += options_.tokenizer ? options_.tokenizer->TokenToPiece(t).size() : 0;
      }
      for (const auto& lp : generated)
        sent_bytes_[index] += options_.tokenizer ? options_.tokenizer->TokenToPiece(lp.token).size() : 0;
    }
    return;
  }
  const bool cancelled = out.finish_reason == engine::FinishReason::kCancelled && !timed_out_;
  if (out.finish_reason == engine::FinishReason::kError || cancelled) {
    const Status err =
        cancelled ? Status(StatusCode::kCancelled, "cancelled: the server is shutting down") : out.error;
    SendEvent(json::parse(FailureError(err).ToJson()));
    done_ = true;
    CancelAll();
    return exchange_->End();
  }
  SendEvent(chunk("", FinishReason(out), nullptr));
  if (finished_ < request_.n) return;
  done_ = true;
  if (request_.include_usage) {
    SendEvent(
        UsageChunk(request_.endpoint, options_.id, options_.created, options_.model,
                   UsageJson(static_cast<int>(request_.prompt.size()), completion_tokens_, cached_tokens_)));
  }
  exchange_->Write("data: [DONE]\n\n");
  exchange_->End();
}

}  // namespace slimkv::server
