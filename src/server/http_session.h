// One HTTP connection (http_listener.h says what it enforces). Internal to the HTTP layer:
// only http_listener.cc and http_session.cc include it.
//
// States: idle (waiting for the first byte of a request) -> header -> body -> answering ->
// idle again (keep-alive) or closed. While answering, the connection reads on: bytes are
// kept for the next (pipelined) request, end of file means the client has gone.
#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "server/http_listener.h"

namespace slimkv::server {

// A deadline's length for Asio timers.
inline std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(boost::asio::ip::tcp::socket socket, HttpListener& owner, std::string peer);
  ~Session();
  void Start();
  // HttpListener::Drain: close unless a request is being answered (then close after it).
  void Drain();
  void Close();

  // Exchange operations, on the io thread; `exchange` must be the current one.
  void Respond(uint64_t exchange, HttpResponse response);
  void BeginStream(uint64_t exchange, HttpResponse head, double keepalive_s, std::string keepalive_text);
  void Write(uint64_t exchange, std::string data);
  void End(uint64_t exchange);
  void OnClientGone(uint64_t exchange, std::function<void()> fn);
  void After(uint64_t exchange, double seconds, std::function<void()> fn);
  bool answering(uint64_t exchange) const { return state_ == State::kAnswering && exchange == exchange_; }

 private:
  enum class State { kIdle, kHeader, kBody, kAnswering, kLinger, kClosed };
  using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;

  void ReadIdle();
  void ReadHeader();
  void OnHeader(boost::beast::error_code ec);
  // A read that ended because the client left or a deadline passed (counted): just close.
  bool ClosedBy(boost::beast::error_code ec);
  void ReadBody();
  void OnBody(boost::beast::error_code ec);
  void Dispatch();
  void Watch();
  void OnWatch(boost::beast::error_code ec, size_t bytes);
  // An answer from the HTTP layer itself (400, 408, 413, 431); the connection closes after it.
  void Refuse(int status, const std::string& message);
  void WriteWhole(HttpResponse response, bool close_after);
  void WriteNext();
  void ExchangeDone();
  void EndExchange();
  void Gone();
  void LingerClose();
  void ArmKeepalive();
  void LogAccess();
  template <class Message>
  void AddCommonHeaders(Message& m, const HttpResponse& r);

  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  HttpListener& owner_;
  std::string peer_;
  State state_ = State::kIdle;
  bool keep_alive_ = true;
  bool in_exchange_ = false;       // handed to the handler, not yet written
  std::shared_ptr<Session> hold_;  // itself, while in_exchange_
  uint64_t exchange_ = 0;          // the current exchange's number
  HttpRequest head_;               // the request being read or answered (no body)
  double started_ = 0;             // NowSeconds when its header was complete
  // Reading while answering.
  bool watching_ = false;
  bool resume_after_watch_ = false;
  // Writing.
  std::optional<boost::beast::http::response<boost::beast::http::string_body>> whole_;
  std::optional<boost::beast::http::response<boost::beast::http::empty_body>> stream_head_;
  std::optional<boost::beast::http::response_serializer<boost::beast::http::empty_body>> serializer_;
  bool streaming_ = false;
  bool head_written_ = false;
  bool end_queued_ = false;
  bool writing_ = false;
  std::deque<std::string> out_;  // stream pieces not yet written
  size_t out_bytes_ = 0;
  bool close_after_ = false;
  int status_ = 0;
  size_t bytes_sent_ = 0;
  std::function<void()> on_gone_;
  boost::asio::steady_timer keepalive_timer_;
  double keepalive_s_ = 0;
  std::string keepalive_text_;
  bool wrote_since_tick_ = false;
  std::vector<std::shared_ptr<boost::asio::steady_timer>> timers_;  // Exchange::After
  size_t linger_bytes_ = 0;
};

}  // namespace slimkv::server
