// The OpenAI-compatible HTTP server over a Scheduler (cpp-httplib, one thread per open
// connection; the engine runs on the scheduler's own thread).
//
// Routes: POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with
// "stream": true), GET /v1/models[/ID], GET /health, GET /metrics (Prometheus), GET /stats
// (the dashboard's JSON), GET / (the dashboard). Errors are OpenAI error objects with the
// HTTP status: 400 bad request (a prompt longer than the context names both lengths),
// 401 missing or wrong API key (when one is set, every /v1/ route needs
// "Authorization: Bearer KEY"), 404 unknown route, 413 body too large, 429 queue full,
// 503 shutting down.
//
// A streaming client that goes away is noticed at the next write (a token, or a keep-alive
// comment sent every `keepalive_seconds` while nothing else is sent) and its requests are
// cancelled, which frees their blocks at the next step. Shutdown stops accepting, lets the
// requests in flight finish, and then Serve returns.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "base/status.h"
#include "engine/engine.h"
#include "engine/scheduler.h"
#include "server/openai_api.h"

namespace slimkv::server {

// Connections the kernel completes and queues before the server accepts them (the
// listen backlog; the kernel caps it at net.core.somaxconn).
inline constexpr int kListenBacklog = 1024;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (port() says which)
  std::string api_key;              // "": no authentication
  std::string model_name = "slimkv";
  size_t max_body_bytes = 1 << 20;  // larger bodies get 413
  ApiLimits limits;
  engine::SamplingParams default_sampling;
  int http_threads = 64;            // connections served at once (a stream holds one)
  double keepalive_seconds = 1.0;
  int read_timeout_seconds = 30;    // a client that sends its request slower is dropped
};

class HttpServer {
 public:
  // The engine and scheduler must outlive the server. The engine is only read (tokenizer,
  // model config), from the connection threads.
  HttpServer(const engine::Engine& engine, engine::Scheduler& scheduler, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the address. IoError naming it when that fails (in use, no such address).
  Status Bind();
  int port() const { return port_; }
  // Serves until Shutdown; returns once the requests in flight have been answered.
  void Serve();
  // Any thread: stop accepting connections and requests, drain, make Serve return.
  void Shutdown();
  bool draining() const { return draining_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
  std::atomic<bool> draining_{false};
};

}  // namespace slimkv::server
