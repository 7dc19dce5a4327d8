#include "server/server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>
#include <random>

#include "engine/request_stream.h"
#include "server/dashboard.h"
#include "server/metrics.h"

namespace slimkv::server {
namespace {

using nlohmann::json;

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(e.ToJson(), "application/json");
}

void SendJson(httplib::Response& res, const json& j, int status = 200) {
  res.status = status;
  res.set_content(Dump(j), "application/json");
}

// Compares without an early exit, so the time taken does not tell how much of a key matched.
bool SameKey(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i % std::max<size_t>(1, b.size())]);
  return diff == 0;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

struct HttpServer::Impl {
  Impl(const engine::Engine& e, engine::Scheduler& s, ServerOptions o, std::atomic<bool>* d)
      : engine(e), scheduler(s), options(std::move(o)), draining(d) {
    auto style = tokenizer::DetectChatStyle(e.tokenizer());
    chat.style = style.ok() ? *style : tokenizer::ChatStyle::kChatMl;
    chat.template_text = e.tokenizer().chat_template();
    seed_base = std::random_device{}();
  }

  void Routes();
  void Generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  uint64_t NextSeed() { return SplitMix64(seed_base + next.fetch_add(1)); }
  std::string NextId(const char* prefix) { return fmt::format("{}-{:016x}", prefix, NextSeed()); }
  // The socket cpp-httplib last created for listening (see the constructor).
  int listen_fd = -1;

  const engine::Engine& engine;
  engine::Scheduler& scheduler;
  ServerOptions options;
  std::atomic<bool>* draining;
  ChatFormat chat;
  uint64_t seed_base = 0;
  std::atomic<uint64_t> next{0};
  httplib::Server http;
};

// The state of one streamed response, shared by the content provider and its releaser.
struct StreamState {
  Endpoint endpoint;
  std::string id, model;
  int64_t created = 0;
  int n = 1;
  bool include_usage = false;
  std::shared_ptr<engine::RequestStream> stream;
  std::vector<engine::RequestId> ids;
  bool all_done = false;
};

void HttpServer::Impl::Generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  const json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return SendError(res, BadRequest("the request body is not valid JSON"));
  ParsedRequest pr;
  ApiError err;
  if (!ParseRequest(endpoint, body, engine.tokenizer(), chat, options.limits, options.default_sampling, &pr, &err)) {
    return SendError(res, err);
  }
  auto stream = std::make_shared<engine::RequestStream>();
  std::vector<engine::RequestId> ids;
  const uint64_t salt = engine::HashCacheSalt(pr.cache_salt);
  for (int i = 0; i < pr.n; ++i) {
    engine::RequestParams p;
    p.prompt = pr.prompt;
    p.max_tokens = pr.max_tokens;
    p.sampling = pr.sampling;
    p.sampling.seed = pr.seed_given ? pr.sampling.seed + static_cast<uint64_t>(i) : NextSeed();
    p.stop = pr.stop;
    p.ignore_eos = pr.ignore_eos;
    p.cache_salt = salt;
    p.on_output = engine::RequestStream::Sink(stream, i);
    auto id = scheduler.Submit(std::move(p));
    if (!id.ok()) {
      for (engine::RequestId done : ids) scheduler.Cancel(done);
      return SendError(res, FromStatus(id.status(), endpoint == Endpoint::kChat ? "messages" : "prompt"));
    }
    ids.push_back(*id);
  }
  const std::string model = pr.model.empty() ? options.model_name : pr.model;
  const std::string rid = NextId(endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl");
  const int64_t created = static_cast<int64_t>(std::time(nullptr));

  if (!pr.stream) {
    // Waits for every choice. A client that leaves meanwhile is not noticed (nothing is
    // written before the end); the request is bounded by max_tokens.
    std::vector<ChoiceResult> choices(pr.n);
    int finished = 0, completion_tokens = 0, cached = 0;
    Status failure;
    engine::RequestStream::Item item;
    while (finished < pr.n) {
      if (!stream->Pop(&item, 3600.0)) continue;
      const engine::RequestOutput& o = item.output;
      if (!o.finished) {
        choices[item.index].text += o.text;
        continue;
      }
      ++finished;
      completion_tokens += o.usage.completion_tokens;
      if (item.index == 0) cached = o.usage.cached_tokens;
      choices[item.index].finish_reason = engine::FinishReasonName(o.finish_reason);
      if (o.finish_reason == engine::FinishReason::kError) failure = o.error;
      if (o.finish_reason == engine::FinishReason::kCancelled) failure = Status(StatusCode::kCancelled, "cancelled: the server is shutting down");
    }
    if (!failure.ok()) return SendError(res, FromStatus(failure));
    const json usage = UsageJson(static_cast<int>(pr.prompt.size()), completion_tokens, cached);
    return SendJson(res, CompletionResponse(endpoint, rid, created, model, choices, usage));
  }

  auto st = std::make_shared<StreamState>();
  st->endpoint = endpoint;
  st->id = rid;
  st->model = model;
  st->created = created;
  st->n = pr.n;
  st->include_usage = pr.include_usage;
  st->stream = stream;
  st->ids = ids;
  const int prompt_tokens = static_cast<int>(pr.prompt.size());
  const double keepalive = options.keepalive_seconds;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st, prompt_tokens, keepalive](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string event = "data: " + Dump(j) + "\n\n";
          return sink.write(event.data(), event.size());
        };
        if (st->endpoint == Endpoint::kChat) {  // the role comes first, as OpenAI sends it
          for (int i = 0; i < st->n; ++i)
            if (!send(StreamChunk(st->endpoint, st->id, st->created, st->model, i, "", "", true))) return false;
        }
        int finished = 0, completion_tokens = 0, cached = 0;
        engine::RequestStream::Item item;
        while (finished < st->n) {
          if (!st->stream->Pop(&item, keepalive)) {
            static constexpr char kComment[] = ": keep-alive\n\n";
            if (!sink.write(kComment, sizeof(kComment) - 1)) return false;  // the client left
            continue;
          }
          const engine::RequestOutput& o = item.output;
          if (!o.finished) {
            if (o.text.empty()) continue;
            if (!send(StreamChunk(st->endpoint, st->id, st->created, st->model, item.index, o.text, "", false))) {
              return false;
            }
            continue;
          }
          ++finished;
          completion_tokens += o.usage.completion_tokens;
          if (item.index == 0) cached = o.usage.cached_tokens;
          if (o.finish_reason == engine::FinishReason::kError || o.finish_reason == engine::FinishReason::kCancelled) {
            const Status err = o.finish_reason == engine::FinishReason::kError
                                   ? o.error
                                   : Status(StatusCode::kCancelled, "cancelled: the server is shutting down");
            send(json::parse(FromStatus(err).ToJson()));
            st->all_done = finished == st->n;
            return false;  // ends the response; the releaser cancels the other choices
          }
          if (!send(StreamChunk(st->endpoint, st->id, st->created, st->model, item.index, "",
                                engine::FinishReasonName(o.finish_reason), false))) {
            return false;
          }
        }
        st->all_done = true;
        if (st->include_usage) {
          send(UsageChunk(st->endpoint, st->id, st->created, st->model,
                          UsageJson(prompt_tokens, completion_tokens, cached)));
        }
        static constexpr char kDone[] = "data: [DONE]\n\n";
        sink.write(kDone, sizeof(kDone) - 1);
        sink.done();
        return true;
      },
      [st, this](bool) {
        // However the response ended: cancel what is still running (the client left, or
        // the connection failed before the first byte). Finished ids are ignored.
        if (!st->all_done)
          for (engine::RequestId id : st->ids) scheduler.Cancel(id);
      });
}

void HttpServer::Impl::Routes() {
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool api = req.path.rfind("/v1/", 0) == 0;
    if (api && !options.api_key.empty()) {
      const std::string auth = req.get_header_value("Authorization");
      if (!SameKey(auth, "Bearer " + options.api_key)) {
        SendError(res, ForHttpStatus(401));
        res.set_header("WWW-Authenticate", "Bearer");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    if (api && req.method == "POST" && draining->load()) {
      SendError(res, ForHttpStatus(503));
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Fills the body of errors the HTTP layer made itself (404, 413, ...); ours have one.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request&, httplib::Response& res) {
        if (!res.body.empty() || res.is_chunked_content_provider_) return httplib::Server::HandlerResponse::Unhandled;
        res.set_content(ForHttpStatus(res.status).ToJson(), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    SendError(res, ApiError{500, what, "server_error", "", ""});
  });

  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(Endpoint::kCompletions, req, res);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(Endpoint::kChat, req, res);
  });
  auto model_json = [this] {
    return json{{"id", options.model_name},
                {"object", "model"},
                {"created", 0},
                {"owned_by", "slimkv"},
                {"meta", {{"n_ctx", options.limits.n_ctx},
                          {"n_vocab", engine.tokenizer().vocab_size()},
                          {"kv_format", scheduler.Stats().kv_format}}}};
  };
  http.Get("/v1/models", [model_json](const httplib::Request&, httplib::Response& res) {
    SendJson(res, json{{"object", "list"}, {"data", json::array({model_json()})}});
  });
  http.Get(R"(/v1/models/(.+))", [this, model_json](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != options.model_name) {
      return SendError(res, ApiError{404, fmt::format("the model '{}' does not exist", std::string(req.matches[1])),
                                     "invalid_request_error", "model", "model_not_found"});
    }
    SendJson(res, model_json());
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining->load()) return SendJson(res, json{{"status", "draining"}}, 503);
    SendJson(res, json{{"status", "ok"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(PrometheusText(scheduler.Stats(), options.model_name), "text/plain; version=0.0.4; charset=utf-8");
  });
  http.Get("/stats", [this](const httplib::Request&, httplib::Response& res) {
    SendJson(res, StatsJson(scheduler.Stats(), options.model_name));
  });
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(DashboardHtml(), "text/html; charset=utf-8");
  });
}

HttpServer::HttpServer(const engine::Engine& engine, engine::Scheduler& scheduler, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, scheduler, std::move(options), &draining_)) {
  httplib::Server& h = impl_->http;
  const int threads = std::max(2, impl_->options.http_threads);
  h.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  h.set_payload_max_length(impl_->options.max_body_bytes);
  h.set_read_timeout(impl_->options.read_timeout_seconds, 0);
  h.set_write_timeout(10, 0);
  h.set_keep_alive_timeout(5);
  h.set_keep_alive_max_count(1000);
  h.set_tcp_nodelay(true);  // stream tokens as they come
  // Debian's cpp-httplib is compiled with a listen backlog of 5: 64 clients connecting at
  // once overflowed the accept queue (TcpExtListenOverflows) and some saw their connection
  // closed without a response (bench/loadgen: "transport: Read"). The socket is kept here
  // and listened on again with a real backlog once bound (Bind). SO_REUSEADDR only, not the
  // library's default SO_REUSEPORT, which lets a second server bind a port in use silently.
  h.set_socket_options([impl = impl_.get()](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    impl->listen_fd = sock;
  });
  impl_->Routes();
}

HttpServer::~HttpServer() = default;

Status HttpServer::Bind() {
  const ServerOptions& o = impl_->options;
  if (o.port == 0) {
    port_ = impl_->http.bind_to_any_port(o.host);
    if (port_ <= 0) return IoError("cannot listen on {} (any port)", o.host);
  } else {
    if (!impl_->http.bind_to_port(o.host, o.port)) {
      return IoError("cannot listen on {}:{} (address in use, or not an address of this machine)", o.host, o.port);
    }
    port_ = o.port;
  }
  if (impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, kListenBacklog) != 0)
    return IoError("cannot listen on {}:{} with a backlog of {}", o.host, port_, kListenBacklog);
  return Status::Ok();
}

void HttpServer::Serve() { impl_->http.listen_after_bind(); }

void HttpServer::Shutdown() {
  draining_ = true;
  impl_->scheduler.StopAccepting();
  impl_->http.stop();
}

}  // namespace slimkv::server
