// The HTTP/1.1 edge (Boost.Beast over Asio): accepts connections on one io thread, reads
// requests under limits and deadlines, hands each to an HttpHandler and writes its answer.
//
// A connection costs a socket, a small read buffer and a parser; no thread. Everything
// runs on the io_context's one thread (the caller of io_context::run), so the listener and
// its connections need no locks; other threads reach them only through Exchange (posts)
// and the IoGate.
//
// Limits, each enforced before the bytes are buffered:
//   header: at most max_header_bytes (request line and fields) and max_header_fields -> 431;
//   body: at most max_body_bytes for every framing (Content-Length is refused from the
//     header alone, chunked as the chunks arrive) -> 413; a request with no Content-Length
//     and no chunked framing has no body (RFC 9112 6.3);
//   framing: differing Content-Length values, Content-Length with Transfer-Encoding, or a
//     Transfer-Encoding other than chunked -> 400 (request smuggling);
//   time: idle_timeout between requests, header_timeout from the first byte to the end of
//     the header (408), body_timeout for the body (408), write_timeout for each write;
//   connections: max_connections in all and max_connections_per_peer per client address;
//     one more is answered 503 and closed at once.
// Pipelined requests are answered one at a time, in order. While a request is being
// answered the connection keeps reading, so a client that goes away is noticed at once
// (Exchange::OnClientGone).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "base/status.h"
#include "server/http_message.h"

namespace boost::asio {
class io_context;
}

namespace slimkv::server {

struct HttpLimits {
  size_t max_header_bytes = 16 << 10;  // request line + fields
  int max_header_fields = 100;
  size_t max_body_bytes = 1 << 20;
  double idle_timeout_s = 15;    // keep-alive: from the end of a response to the next byte
  double header_timeout_s = 10;  // from the connection (or the first byte) to the end of the header
  double body_timeout_s = 30;    // from the end of the header to the end of the body
  double write_timeout_s = 30;   // for each write; a client that stops reading is dropped
  int max_connections = 1024;
  int max_connections_per_peer = 128;
};

// Counters for /metrics, readable from any thread.
struct HttpCounters {
  std::atomic<int64_t> open{0};  // connections now
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> refused{0};    // over max_connections or the per-peer cap
  std::atomic<uint64_t> timed_out{0};  // idle, header, body or write deadline
  std::atomic<uint64_t> rejected{0};   // 400/408/413/431 from the HTTP layer itself
};

// Posts to an io_context while it lives; Close makes later posts no-ops (an engine thread
// may still hold a callback when the server is gone).
class IoGate {
 public:
  explicit IoGate(boost::asio::io_context* ioc) : ioc_(ioc) {}
  void Post(std::function<void()> fn);
  void Close();

 private:
  std::mutex mu_;
  boost::asio::io_context* ioc_;
};

class Session;

class HttpListener {
 public:
  HttpListener(boost::asio::io_context& ioc, HttpHandler& handler, HttpLimits limits,
               std::shared_ptr<IoGate> gate, bool access_log);
  ~HttpListener();

  // Binds and listens (SO_REUSEADDR, backlog kListenBacklog). IoError naming the address.
  Status Bind(const std::string& host, int port, int backlog);
  int port() const { return port_; }
  // The rest on the io thread.
  void Start();
  // No more keep-alive: idle connections and ones still reading a request close now;
  // connections answering a request close after the answer. Accepting continues (a health
  // check sees "draining"); new connections close after one answer.
  void Drain();
  // Closes the listening socket and every connection.
  void CloseAll();
  bool draining() const { return draining_; }
  // Requests handed to the handler and not yet answered (or abandoned).
  int in_flight() const { return in_flight_; }
  // Called on the io thread whenever in_flight drops.
  void set_on_idle(std::function<void()> fn) { on_idle_ = std::move(fn); }
  const HttpCounters& counters() const { return counters_; }

  // For sessions.
  const HttpLimits& limits() const { return limits_; }
  HttpHandler& handler() { return handler_; }
  const std::shared_ptr<IoGate>& gate() const { return gate_; }
  bool access_log() const { return access_log_; }
  HttpCounters& mutable_counters() { return counters_; }
  void ExchangeStarted() { ++in_flight_; }
  void ExchangeEnded();
  void Forget(Session* s, const std::string& peer);
  std::string NextRequestId();

 private:
  struct Impl;
  void Accept();
  std::unique_ptr<Impl> impl_;
  HttpHandler& handler_;
  HttpLimits limits_;
  std::shared_ptr<IoGate> gate_;
  bool access_log_;
  HttpCounters counters_;
  std::unordered_set<Session*> sessions_;
  std::map<std::string, int> per_peer_;
  int port_ = 0;
  int in_flight_ = 0;
  bool draining_ = false;
  bool closed_ = false;
  uint64_t next_request_ = 0;
  uint64_t request_id_base_ = 0;
  std::function<void()> on_idle_;
};

}  // namespace slimkv::server
