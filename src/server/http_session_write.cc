// The answering half of Session (http_session.h): whole responses, chunked streams with
// keep-alive comments, and the HTTP layer's own refusals. Reading is in http_session.cc.
#include <boost/asio/write.hpp>

#include "base/log.h"
#include "server/api_error.h"
#include "server/http_session.h"

namespace slimkv::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

constexpr size_t kStreamBacklog = 8 << 20;  // unwritten stream bytes before a client counts as gone

std::string ErrorBody(int status, const std::string& message) {
  ApiError e = ForHttpStatus(status);
  e.message = message;
  return e.ToJson();
}

}  // namespace

template <class Message>
void Session::AddCommonHeaders(Message& m, const HttpResponse& r) {
  m.set(http::field::content_type, r.content_type);
  if (!head_.request_id.empty()) m.set("X-Request-Id", head_.request_id);
  for (const auto& [name, value] : r.headers) m.insert(name, value);
}

void Session::Refuse(int status, const std::string& message) {
  ++owner_.mutable_counters().rejected;
  if (head_.request_id.empty()) head_.request_id = owner_.NextRequestId();
  if (started_ == 0) started_ = NowSeconds();
  HttpResponse r;
  r.status = status;
  r.body = ErrorBody(status, message);
  WriteWhole(std::move(r), /*close_after=*/true);
}

void Session::WriteWhole(HttpResponse r, bool close_after) {
  if (state_ == State::kClosed || state_ == State::kLinger || writing_) return;
  status_ = r.status;
  close_after_ = close_after || !keep_alive_ || owner_.draining();
  http::response<http::string_body> m{static_cast<http::status>(r.status), 11};
  AddCommonHeaders(m, r);
  m.body() = std::move(r.body);
  m.keep_alive(!close_after_);
  m.prepare_payload();
  whole_.emplace(std::move(m));
  writing_ = true;
  stream_.expires_after(Seconds(owner_.limits().write_timeout_s));
  http::async_write(stream_, *whole_, [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->writing_ = false;
    self->bytes_sent_ += n;
    self->whole_.reset();
    if (self->state_ == State::kClosed) return;
    if (ec) return self->Gone();
    self->ExchangeDone();
  });
}

void Session::Respond(uint64_t n, HttpResponse r) {
  if (!answering(n) || streaming_) return;
  WriteWhole(std::move(r), false);
}

void Session::BeginStream(uint64_t n, HttpResponse head, double keepalive_s, std::string text) {
  if (!answering(n) || streaming_ || writing_) return;
  streaming_ = true;
  status_ = head.status;
  close_after_ = !keep_alive_ || owner_.draining();
  http::response<http::empty_body> m{static_cast<http::status>(head.status), 11};
  AddCommonHeaders(m, head);
  m.chunked(true);
  m.keep_alive(!close_after_);
  serializer_.reset();
  stream_head_.emplace(std::move(m));
  serializer_.emplace(*stream_head_);
  keepalive_s_ = keepalive_s;
  keepalive_text_ = std::move(text);
  writing_ = true;
  stream_.expires_after(Seconds(owner_.limits().write_timeout_s));
  http::async_write_header(stream_, *serializer_,
                           [self = shared_from_this()](beast::error_code ec, size_t n) {
                             self->writing_ = false;
                             self->bytes_sent_ += n;
                             if (self->state_ == State::kClosed) return;
                             if (ec) return self->Gone();
                             self->head_written_ = true;
                             self->WriteNext();
                           });
  ArmKeepalive();
}

void Session::Write(uint64_t n, std::string data) {
  if (!answering(n) || !streaming_ || end_queued_ || data.empty()) return;
  out_bytes_ += data.size();
  wrote_since_tick_ = true;
  out_.push_back(std::move(data));
  if (out_bytes_ > kStreamBacklog) return Gone();  // the client does not read
  WriteNext();
}

void Session::End(uint64_t n) {
  if (!answering(n) || !streaming_) return;
  end_queued_ = true;
  WriteNext();
}

void Session::WriteNext() {
  if (writing_ || !head_written_ || state_ != State::kAnswering) return;
  auto done = [self = shared_from_this()](beast::error_code ec, size_t n) {
    self->writing_ = false;
    self->bytes_sent_ += n;
    if (self->state_ == State::kClosed) return;
    if (ec) return self->Gone();
    if (!self->out_.empty()) {
      self->out_bytes_ -= self->out_.front().size();
      self->out_.pop_front();
      return self->WriteNext();
    }
    self->ExchangeDone();
  };
  if (!out_.empty()) {
    writing_ = true;
    stream_.expires_after(Seconds(owner_.limits().write_timeout_s));
    net::async_write(stream_, http::make_chunk(net::buffer(out_.front())), std::move(done));
  } else if (end_queued_) {
    writing_ = true;
    stream_.expires_after(Seconds(owner_.limits().write_timeout_s));
    net::async_write(stream_, http::make_chunk_last(), std::move(done));
  }
}

void Session::ArmKeepalive() {
  if (keepalive_s_ <= 0) return;
  keepalive_timer_.expires_after(Seconds(keepalive_s_));
  keepalive_timer_.async_wait([self = shared_from_this(), n = exchange_](beast::error_code ec) {
    if (ec || !self->answering(n) || !self->streaming_ || self->end_queued_) return;
    if (!self->wrote_since_tick_ && self->out_.empty()) {
      self->out_.push_back(self->keepalive_text_);
      self->out_bytes_ += self->keepalive_text_.size();
      self->WriteNext();
    }
    self->wrote_since_tick_ = false;
    self->ArmKeepalive();
  });
}

}  // namespace slimkv::server
