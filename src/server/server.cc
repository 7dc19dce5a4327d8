#include "server/server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <ctime>
#include <random>
#include <thread>

#include "base/hash.h"
#include "base/log.h"
#include "server/dashboard.h"
#include "server/generation.h"
#include "server/http_guard.h"
#include "server/metrics.h"

namespace slimkv::server {
namespace {

namespace net = boost::asio;
using nlohmann::json;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

bool IsLoopbackBind(const std::string& host) { return IsLoopbackHostName(host) || host == "::1"; }

HttpResponse Error(const ApiError& e) {
  HttpResponse r;
  r.status = e.http_status;
  r.body = e.ToJson();
  return r;
}

HttpResponse JsonResponse(const json& j, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.body = Dump(j);
  return r;
}

enum class Route { kNone, kCompletions, kChat, kModels, kModel, kHealth, kMetrics, kStats, kDashboard };

// The route of a path and the method it takes.
Route RouteOf(const std::string& path, const char** method) {
  struct Entry {
    const char* path;
    Route route;
    const char* method;
  };
  static constexpr Entry kRoutes[] = {
      {"/v1/completions", Route::kCompletions, "POST"},
      {"/v1/chat/completions", Route::kChat, "POST"},
      {"/v1/models", Route::kModels, "GET"},
      {"/health", Route::kHealth, "GET"},
      {"/metrics", Route::kMetrics, "GET"},
      {"/stats", Route::kStats, "GET"},
      {"/", Route::kDashboard, "GET"},
  };
  for (const Entry& e : kRoutes) {
    if (path == e.path) {
      *method = e.method;
      return e.route;
    }
  }
  if (path.rfind("/v1/models/", 0) == 0 && path.size() > 11) {
    *method = "GET";
    return Route::kModel;
  }
  return Route::kNone;
}

}  // namespace

struct HttpServer::Impl : HttpHandler {
  Impl(const engine::Engine& e, engine::Scheduler& s, ServerOptions o, std::atomic<bool>* d)
      : engine(e),
        scheduler(s),
        options(std::move(o)),
        draining(d),
        gate(std::make_shared<IoGate>(&ioc)),
        workers(static_cast<size_t>(std::max(1, options.worker_threads))),
        listener(ioc, *this, options.http, gate, options.access_log) {
    auto style = tokenizer::DetectChatStyle(e.tokenizer());
    chat.style = style.ok() ? *style : tokenizer::ChatStyle::kChatMl;
    chat.template_text = e.tokenizer().chat_template();
    seed_base = std::random_device{}();
    host_policy.loopback_only = IsLoopbackBind(options.host);
    host_policy.allowed = options.allowed_hosts;
    options.limits.max_sequence_tokens = s.MaxSequenceTokens();
    listener.set_on_idle([this] { MaybeFinishDrain(); });
  }

  bool CheckHeader(const HttpRequest& head, HttpResponse* refusal) override;
  void Handle(HttpRequest request, std::shared_ptr<Exchange> exchange) override;
  void Generate(Endpoint endpoint, const HttpRequest& req, std::shared_ptr<Exchange> ex);
  // CORS headers for a response to `req` (none unless its origin is listed).
  std::vector<std::pair<std::string, std::string>> CorsHeaders(const HttpRequest& req) const;
  // The tenant of a request: a hash of the API key it used, "" without keys.
  std::string Tenant(const HttpRequest& req) const;
  json ModelJson() const;
  void MaybeFinishDrain();
  uint64_t NextSeed() { return SplitMix64(seed_base + next.fetch_add(1)); }

  const engine::Engine& engine;
  engine::Scheduler& scheduler;
  ServerOptions options;
  std::atomic<bool>* draining;
  ChatFormat chat;
  HostPolicy host_policy;
  uint64_t seed_base = 0;
  std::atomic<uint64_t> next{0};
  net::io_context ioc{1};
  std::shared_ptr<IoGate> gate;
  net::thread_pool workers;
  HttpListener listener;
};

std::vector<std::pair<std::string, std::string>> HttpServer::Impl::CorsHeaders(const HttpRequest& req) const {
  const std::string_view origin = req.Header("Origin");
  if (origin.empty() || !OriginListed(origin, options.cors_origins)) return {};
  return {{"Access-Control-Allow-Origin", std::string(origin)}, {"Vary", "Origin"}};
}

std::string HttpServer::Impl::Tenant(const HttpRequest& req) const {
  if (options.api_keys.empty()) return {};
  const int k = MatchApiKey(BearerToken(req.Header("Authorization")), options.api_keys);
  if (k < 0) return {};
  const std::string& key = options.api_keys[k];
  // The key itself never leaves this function: the tenant is a keyed hash of it.
  return fmt::format("key:{:016x}", SipHash24(key.data(), key.size()));
}

bool HttpServer::Impl::CheckHeader(const HttpRequest& head, HttpResponse* refusal) {
  auto refuse = [&](ApiError e) {
    *refusal = Error(e);
    refusal->headers = CorsHeaders(head);
    return false;
  };
  if (!HostAllowed(head.Header("Host"), host_policy)) {
    return refuse(ApiError{403,
                           fmt::format("the Host '{}' is not allowed (a server on a loopback address answers "
                                       "loopback names only; --allow-host adds names)",
                                       std::string(head.Header("Host").substr(0, 100))),
                           "permission_error", "", "host_not_allowed"});
  }
  const std::string_view origin = head.Header("Origin");
  const bool origin_listed = !origin.empty() && OriginListed(origin, options.cors_origins);
  if (!origin.empty() && !origin_listed && !SameOrigin(origin, head.Header("Host"))) {
    return refuse(ApiError{403, "cross-origin requests are not allowed (--cors-origin allows an origin)",
                           "permission_error", "", "origin_not_allowed"});
  }
  if (head.method == "OPTIONS") {  // a CORS preflight
    if (!origin_listed) return refuse(ForHttpStatus(405));
    *refusal =
        HttpResponse{.status = 204, .content_type = "text/plain", .body = "", .headers = CorsHeaders(head)};
    refusal->headers.emplace_back("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    refusal->headers.emplace_back("Access-Control-Allow-Headers",
                                  "Authorization, Content-Type, X-Request-Id");
    refusal->headers.emplace_back("Access-Control-Max-Age", "600");
    return false;
  }
  const bool api = head.path.rfind("/v1/", 0) == 0;
  if (api && !options.api_keys.empty() &&
      MatchApiKey(BearerToken(head.Header("Authorization")), options.api_keys) < 0) {
    if (!refuse(ForHttpStatus(401))) refusal->headers.emplace_back("WWW-Authenticate", "Bearer");
    return false;
  }
  const char* method = "";
  const Route route = RouteOf(head.path, &method);
  if (route == Route::kNone) return refuse(ForHttpStatus(404));
  if (head.method != method) {
    refuse(ForHttpStatus(405));
    refusal->headers.emplace_back("Allow", method);
    return false;
  }
  if (head.method == "POST") {
    if (!IsJsonMediaType(head.Header("Content-Type"))) {
      return refuse(ApiError{415, "the body must be JSON sent as Content-Type: application/json",
                             "invalid_request_error", "", "unsupported_media_type"});
    }
    if (draining->load()) return refuse(ForHttpStatus(503));
  }
  return true;
}

json HttpServer::Impl::ModelJson() const {
  return json{{"id", options.model_name},
              {"object", "model"},
              {"created", 0},
              {"owned_by", "slimkv"},
              {"meta",
               {{"n_ctx", options.limits.n_ctx},
                {"n_vocab", engine.tokenizer().vocab_size()},
                {"kv_format", scheduler.Stats().kv_format}}}};
}

void HttpServer::Impl::Handle(HttpRequest req, std::shared_ptr<Exchange> ex) {
  const char* method = "";
  const Route route = RouteOf(req.path, &method);
  HttpResponse r;
  switch (route) {
    case Route::kCompletions:
      return Generate(Endpoint::kCompletions, req, std::move(ex));
    case Route::kChat:
      return Generate(Endpoint::kChat, req, std::move(ex));
    case Route::kModels:
      r = JsonResponse(json{{"object", "list"}, {"data", json::array({ModelJson()})}});
      break;
    case Route::kModel: {
      const std::string id = req.path.substr(11);
      r = id == options.model_name
              ? JsonResponse(ModelJson())
              : Error(ApiError{404, fmt::format("the model '{}' does not exist", id.substr(0, 200)),
                               "invalid_request_error", "model", "model_not_found"});
      break;
    }
    case Route::kHealth:
      r = draining->load() ? JsonResponse(json{{"status", "draining"}}, 503)
                           : JsonResponse(json{{"status", "ok"}});
      break;
    case Route::kMetrics: {
      const HttpCounters& c = listener.counters();
      const HttpStats http{c.open.load(), c.accepted.load(), c.refused.load(), c.timed_out.load(),
                           c.rejected.load()};
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = PrometheusText(scheduler.Stats(), options.model_name, &http);
      break;
    }
    case Route::kStats:
      r = JsonResponse(StatsJson(scheduler.Stats(), options.model_name));
      break;
    case Route::kDashboard:
      r.content_type = "text/html; charset=utf-8";
      r.body = DashboardHtml();
      break;
    case Route::kNone:
      r = Error(ForHttpStatus(404));
      break;
  }
  r.headers = CorsHeaders(req);
  ex->Respond(std::move(r));
}

void HttpServer::Impl::Generate(Endpoint endpoint, const HttpRequest& req, std::shared_ptr<Exchange> ex) {
  GenerationOptions go;
  go.id = fmt::format("{}-{:016x}", endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl", NextSeed());
  go.created = static_cast<int64_t>(std::time(nullptr));
  go.keepalive_seconds = options.keepalive_seconds;
  go.time_limit_seconds = options.request_timeout_seconds;
  go.headers = CorsHeaders(req);
  const std::string tenant = Tenant(req);
  // Parsing and tokenizing can take a while for a large body: off the io thread.
  net::post(workers, [this, endpoint, body = std::move(req.body), tenant, go = std::move(go), ex]() mutable {
    try {
      const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
      body = std::string();
      ParsedRequest pr;
      ApiError err;
      if (j.is_discarded()) {
        err = BadRequest("the request body is not valid JSON");
      } else if (!ParseRequest(endpoint, j, engine.tokenizer(), chat, options.limits,
                               options.default_sampling, &pr, &err)) {
      } else {
        go.model = pr.model.empty() ? options.model_name : pr.model;
        go.cache_salt = engine::TenantSalt(tenant, pr.cache_salt);
        return GenerationCall::Run(scheduler, std::move(pr), std::move(go), ex,
                                   [this] { return NextSeed(); });
      }
      HttpResponse r = Error(err);
      r.headers = go.headers;
      ex->Respond(std::move(r));
    } catch (const std::exception& e) {
      // Never the exception's text to the client: it is ours, not theirs.
      SPDLOG_ERROR("request {}: {}", ex->request_id(), e.what());
      ex->Respond(Error(ApiError{500, fmt::format("internal error (request id {})", ex->request_id()),
                                 "server_error", "", ""}));
    }
  });
}

void HttpServer::Impl::MaybeFinishDrain() {
  if (!draining->load() || listener.in_flight() > 0) return;
  listener.CloseAll();
  ioc.stop();
}

HttpServer::HttpServer(const engine::Engine& engine, engine::Scheduler& scheduler, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, scheduler, std::move(options), &draining_)) {}

HttpServer::~HttpServer() {
  impl_->gate->Close();
  impl_->workers.join();
  // Let every connection finish closing, so none outlives the listener. A queued Close or
  // drain end stops run() early: run again until nothing is left to run.
  impl_->listener.CloseAll();
  do {
    impl_->ioc.restart();
  } while (impl_->ioc.run() > 0);
}

Status HttpServer::Bind() {
  RETURN_IF_ERROR(impl_->listener.Bind(impl_->options.host, impl_->options.port, kListenBacklog));
  port_ = impl_->listener.port();
  return Status::Ok();
}

void HttpServer::Serve() {
  impl_->listener.Start();
  for (;;) {
    try {
      impl_->ioc.run();
      return;
    } catch (const std::exception& e) {  // a bug in a handler: log it, keep serving
      SPDLOG_ERROR("http: {}", e.what());
    }
  }
}

void HttpServer::Shutdown() {
  draining_ = true;
  impl_->scheduler.StopAccepting();
  net::post(impl_->ioc, [impl = impl_.get()] {
    impl->listener.Drain();
    impl->MaybeFinishDrain();
  });
}

void HttpServer::Close() {
  net::post(impl_->ioc, [impl = impl_.get()] {
    impl->listener.CloseAll();
    impl->ioc.stop();
  });
}

}  // namespace slimkv::server
