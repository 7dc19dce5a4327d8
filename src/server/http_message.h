// What the HTTP layer (http_session.cc, Boost.Beast) hands the application (server.cc) and
// what it takes back, without Beast types: a parsed request, a response, and the Exchange
// through which one request is answered, now or later, from any thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace slimkv::server {

// Lower-case ASCII comparison (header names, media types, auth schemes).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ... as sent
  std::string target;                                        // the request target as sent
  std::string path;                                          // the target up to '?'
  std::vector<std::pair<std::string, std::string>> headers;  // as sent, in order
  std::string body;        // empty until the body is read (HttpHandler::Handle)
  bool has_body = false;   // Content-Length > 0 or chunked
  std::string peer;        // the client's address ("127.0.0.1")
  std::string request_id;  // the client's X-Request-Id when usable, else one of ours

  // The first header named `name` (case-insensitive), "" when absent.
  std::string_view Header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra: CORS, Retry-After, ...
};

// One request's way back to its client. Any thread may call these; the connection carries
// them out in call order. Respond, or BeginStream ... End, exactly once; calls after the
// client has gone are ignored.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual void Respond(HttpResponse response) = 0;
  // A chunked response: `head`'s status, type and headers now, the body in Write pieces.
  // While nothing is written for `keepalive_seconds` the connection writes
  // `keepalive_text` (an SSE comment), which also notices a client that has gone.
  virtual void BeginStream(HttpResponse head, double keepalive_seconds, std::string keepalive_text) = 0;
  virtual void Write(std::string data) = 0;
  virtual void End() = 0;
  // `on_gone` runs once, on the connection's thread, if the client goes away (or the
  // connection fails) before the response has been written; at once if it already has.
  virtual void OnClientGone(std::function<void()> on_gone) = 0;
  // Runs `fn` on the connection's thread after `seconds` unless the exchange ended first.
  virtual void After(double seconds, std::function<void()> fn) = 0;
  // Runs `fn` on the connection's thread (outputs of the engine arrive this way, in order).
  virtual void Post(std::function<void()> fn) = 0;
  virtual const std::string& request_id() const = 0;
};

// The application side of the HTTP layer. Both run on the connection's thread and must not
// block (post slow work elsewhere and answer through the Exchange).
class HttpHandler {
 public:
  virtual ~HttpHandler() = default;
  // Once the header is in, before any of the body is read: a response ends the request here
  // (a body that was announced is then not read, and the connection closes after it).
  virtual bool CheckHeader(const HttpRequest& head, HttpResponse* refusal) = 0;
  virtual void Handle(HttpRequest request, std::shared_ptr<Exchange> exchange) = 0;
};

}  // namespace slimkv::server
