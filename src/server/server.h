// The OpenAI-compatible HTTP server over a Scheduler.
//
// Threads: one io thread (the caller of Serve) runs every connection (http_listener.h:
// limits, deadlines, pipelining); a few worker threads parse JSON, apply the chat template
// and tokenize; the engine runs on the scheduler's own thread. A connection costs no thread.
//
// Routes: POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with
// "stream": true), GET /v1/models[/ID], GET /health, GET /metrics (Prometheus), GET /stats
// (the dashboard's JSON), GET / (the dashboard), OPTIONS (CORS preflight). Errors are OpenAI
// error objects: 400 bad request (a prompt + max_tokens that does not fit names the numbers),
// 401 missing or wrong API key (every /v1/ route, "Authorization: Bearer KEY", any of the
// keys), 403 a Host or Origin that is not allowed, 404 unknown route, 405 wrong method,
// 408 a request not sent in time, 413 body too large, 415 a body that is not
// application/json, 429 queue full, 431 header too large, 503 draining or too many
// connections.
//
// Checks made from the header alone (the body is then not read): Host, Origin, route,
// method, API key, media type, draining.
//
// Tenants: with API keys, each key is a tenant of the prefix cache (a request reuses cached
// blocks only of requests made with the same key and the same cache_salt); without keys,
// clients share one tenant unless they send a cache_salt.
//
// Shutdown drains: idle and half-sent connections close at once, new requests get 503 and
// /health says "draining", requests in flight finish; then Serve returns. Close ends it all.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "server/http_listener.h"
#include "server/openai_api.h"

namespace slimkv::server {

// Connections the kernel completes and queues before the server accepts them (the
// listen backlog; the kernel caps it at net.core.somaxconn).
inline constexpr int kListenBacklog = 1024;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port (port() says which)
  std::vector<std::string> api_keys;  // empty: no authentication
  std::string model_name = "slimkv";
  HttpLimits http;  // header, body, time and connection limits
  ApiLimits limits;
  engine::SamplingParams default_sampling;
  int worker_threads = 2;                  // threads that parse and tokenize requests
  double keepalive_seconds = 1.0;          // SSE comment while a stream has nothing to send
  double request_timeout_seconds = 0;      // a request still running after this ends (0: never)
  std::vector<std::string> allowed_hosts;  // Host names accepted beyond loopback ones; "*": any
  std::vector<std::string> cors_origins;   // origins that may call from a browser; "*": any
  bool access_log = false;                 // one log line per request (serve -v)
};

class HttpServer {
 public:
  // The engine and scheduler must outlive the server, and the scheduler must stop before the
  // server is destroyed only if requests may still run (their outputs are then dropped).
  HttpServer(const engine::Engine& engine, engine::Scheduler& scheduler, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the address. IoError naming it when that fails (in use, no such address).
  Status Bind();
  int port() const { return port_; }
  // Serves on the calling thread until the drain ends or Close.
  void Serve();
  // Any thread: start draining (see above). Serve returns once no request is in flight.
  void Shutdown();
  // Any thread: close every connection now and make Serve return.
  void Close();
  bool draining() const { return draining_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
};

}  // namespace slimkv::server
