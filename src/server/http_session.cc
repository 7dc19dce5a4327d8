#include "server/http_session.h"

#include <boost/asio/ip/tcp.hpp>
#include <chrono>

#include "base/log.h"
#include "server/api_error.h"
#include "server/http_guard.h"

namespace slimkv::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

constexpr size_t kReadChunk = 16 << 10;  // bytes per read while idle or answering
constexpr double kLingerSeconds = 2;     // reading (and dropping) the rest of a refused body
constexpr size_t kLingerBytes = 8 << 20;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// What the handler holds: posts each call to the session on the io thread. A session that
// has gone makes the calls no-ops, except OnClientGone, which then runs at once.
class SessionExchange : public Exchange {
 public:
  SessionExchange(std::weak_ptr<Session> session, uint64_t n, std::shared_ptr<IoGate> gate, std::string rid)
      : session_(std::move(session)), n_(n), gate_(std::move(gate)), rid_(std::move(rid)) {}

  void Respond(HttpResponse r) override {
    Run([r = std::move(r)](Session& s, uint64_t n) mutable { s.Respond(n, std::move(r)); });
  }
  void BeginStream(HttpResponse head, double keepalive_s, std::string text) override {
    Run([head = std::move(head), keepalive_s, text = std::move(text)](Session& s, uint64_t n) mutable {
      s.BeginStream(n, std::move(head), keepalive_s, std::move(text));
    });
  }
  void Write(std::string data) override {
    Run([data = std::move(data)](Session& s, uint64_t n) mutable { s.Write(n, std::move(data)); });
  }
  void End() override {
    Run([](Session& s, uint64_t n) { s.End(n); });
  }
  void OnClientGone(std::function<void()> fn) override {
    gate_->Post([w = session_, n = n_, fn = std::move(fn)]() mutable {
      if (auto s = w.lock()) return s->OnClientGone(n, std::move(fn));
      fn();
    });
  }
  void After(double seconds, std::function<void()> fn) override {
    Run([seconds, fn = std::move(fn)](Session& s, uint64_t n) mutable {
      s.After(n, seconds, std::move(fn));
    });
  }
  void Post(std::function<void()> fn) override { gate_->Post(std::move(fn)); }
  const std::string& request_id() const override { return rid_; }

 private:
  template <class F>
  void Run(F f) {
    gate_->Post([w = session_, n = n_, f = std::move(f)]() mutable {
      if (auto s = w.lock()) f(*s, n);
    });
  }
  std::weak_ptr<Session> session_;
  uint64_t n_;
  std::shared_ptr<IoGate> gate_;
  std::string rid_;
};

}  // namespace

Session::Session(net::ip::tcp::socket socket, HttpListener& owner, std::string peer)
    : stream_(std::move(socket)),
      buffer_(owner.limits().max_header_bytes + kReadChunk),
      owner_(owner),
      peer_(std::move(peer)),
      keepalive_timer_(stream_.get_executor()) {}

Session::~Session() { owner_.Forget(this, peer_); }

void Session::Start() { ReadIdle(); }

void Session::ReadIdle() {
  state_ = State::kIdle;
  if (buffer_.size() > 0) return ReadHeader();  // pipelined: the next request is here
  buffer_.shrink_to_fit();  // an idle connection keeps no read buffer (no read is pending here)
  // A new connection gets the header deadline to start; a kept-alive one the idle timeout.
  const HttpLimits& l = owner_.limits();
  stream_.expires_after(Seconds(exchange_ == 0 ? l.header_timeout_s : l.idle_timeout_s));
  stream_.async_read_some(buffer_.prepare(kReadChunk),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            if (self->state_ != State::kIdle) return;
                            if (ec) {
                              if (ec == beast::error::timeout) ++self->owner_.mutable_counters().timed_out;
                              return self->Close();
                            }
                            self->buffer_.commit(n);
                            self->ReadHeader();
                          });
}

void Session::ReadHeader() {
  state_ = State::kHeader;
  head_ = HttpRequest{};
  started_ = 0;
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(owner_.limits().max_header_bytes));
  parser_->body_limit(owner_.limits().max_body_bytes);
  stream_.expires_after(Seconds(owner_.limits().header_timeout_s));
  http::async_read_header(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
}

void Session::OnHeader(beast::error_code ec) {
  if (state_ != State::kHeader) return;
  const HttpLimits& l = owner_.limits();
  if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
    return Refuse(431, fmt::format("the request header is larger than {} bytes", l.max_header_bytes));
  }
  if (ec == http::error::body_limit) {
    return Refuse(413,
                  fmt::format("the request body is larger than {} bytes (--max-body)", l.max_body_bytes));
  }
  if (ec == http::error::bad_content_length || ec == http::error::multiple_content_length) {
    return Refuse(400, "malformed or conflicting Content-Length headers");
  }
  if (ec == http::error::bad_transfer_encoding) {
    return Refuse(400, "Transfer-Encoding repeated or together with Content-Length");
  }
  if (ClosedBy(ec)) return Close();
  if (ec) return Refuse(400, "malformed HTTP request (" + ec.message() + ")");

  const auto& req = parser_->get();
  int fields = 0;
  for (auto it = req.begin(); it != req.end(); ++it) ++fields;
  if (fields > l.max_header_fields) {
    return Refuse(431, fmt::format("the request has {} header fields; at most {} are accepted", fields,
                                   l.max_header_fields));
  }
  if (req.find(http::field::transfer_encoding) != req.end() && !parser_->chunked()) {
    return Refuse(400, "only the chunked transfer coding is accepted");
  }
  const std::string_view target(req.target().data(), req.target().size());
  if (target.empty() || target.front() != '/') return Refuse(400, "the request target must be a path");

  head_ = HttpRequest{};
  head_.method = std::string(req.method_string());
  head_.target = std::string(target);
  head_.path = std::string(target.substr(0, target.find('?')));
  for (const auto& f : req) head_.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  head_.has_body = parser_->chunked() || parser_->content_length().value_or(0) > 0;
  head_.peer = peer_;
  head_.request_id = SanitizeRequestId(head_.Header("X-Request-Id"));
  if (head_.request_id.empty()) head_.request_id = owner_.NextRequestId();
  started_ = NowSeconds();
  status_ = 0;
  bytes_sent_ = 0;
  keep_alive_ = req.keep_alive() && !owner_.draining();

  HttpResponse refusal;
  if (!owner_.handler().CheckHeader(head_, &refusal)) {
    // The body (if any) is not read: the connection closes after the answer.
    return WriteWhole(std::move(refusal), head_.has_body && !parser_->is_done());
  }
  if (head_.has_body && !parser_->is_done() && EqualsIgnoreCase(head_.Header("Expect"), "100-continue")) {
    state_ = State::kBody;
    stream_.expires_after(Seconds(l.write_timeout_s));
    net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (self->state_ != State::kBody) return;
                       if (ec) return self->Close();
                       self->ReadBody();
                     });
    return;
  }
  ReadBody();
}

bool Session::ClosedBy(beast::error_code ec) {
  if (ec == beast::error::timeout) {  // a deadline passed; the stream has closed the socket
    ++owner_.mutable_counters().timed_out;
    return true;
  }
  return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::operation_aborted;
}

void Session::ReadBody() {
  state_ = State::kBody;
  if (parser_->is_done()) return Dispatch();
  stream_.expires_after(Seconds(owner_.limits().body_timeout_s));
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
}

void Session::OnBody(beast::error_code ec) {
  if (state_ != State::kBody) return;
  if (ec == http::error::body_limit) {
    return Refuse(413, fmt::format("the request body is larger than {} bytes (--max-body)",
                                   owner_.limits().max_body_bytes));
  }
  if (ClosedBy(ec)) return Close();
  if (ec) return Refuse(400, "malformed request body framing (" + ec.message() + ")");
  Dispatch();
}

void Session::Dispatch() {
  state_ = State::kAnswering;
  in_exchange_ = true;
  ++exchange_;
  // Alive until answered, even while no read or write is pending (a full buffer of
  // pipelined bytes stops the reading; the handler holds the Exchange, not the session).
  hold_ = shared_from_this();
  HttpRequest req = head_;
  req.body = std::move(parser_->get().body());
  parser_.reset();
  owner_.ExchangeStarted();
  auto ex = std::make_shared<SessionExchange>(weak_from_this(), exchange_, owner_.gate(), head_.request_id);
  Watch();
  try {
    owner_.handler().Handle(std::move(req), ex);
  } catch (const std::exception& e) {  // a bug: answer 500 (without its text) and go on serving
    SPDLOG_ERROR("request {}: {}", head_.request_id, e.what());
    HttpResponse r;
    r.status = 500;
    r.body = ApiError{500, "internal error (request id " + head_.request_id + ")", "server_error", "", ""}
                 .ToJson();
    ex->Respond(std::move(r));
  }
}

void Session::Watch() {
  if (watching_ || state_ == State::kClosed) return;
  const size_t room = buffer_.max_size() - buffer_.size();
  if (room == 0) return;  // a full buffer of pipelined bytes: read again once they are parsed
  watching_ = true;
  stream_.expires_never();
  stream_.async_read_some(
      buffer_.prepare(std::min(room, kReadChunk)),
      [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWatch(ec, n); });
}

void Session::OnWatch(beast::error_code ec, size_t n) {
  watching_ = false;
  if (state_ == State::kClosed) return;
  if (!ec) buffer_.commit(n);
  if (state_ == State::kLinger) {  // dropping the rest of a refused request
    linger_bytes_ += buffer_.size();
    buffer_.consume(buffer_.size());
    if (ec || linger_bytes_ > kLingerBytes) return Close();
    return Watch();
  }
  if (resume_after_watch_) {
    resume_after_watch_ = false;
    return ReadIdle();
  }
  if (ec) {
    if (state_ == State::kAnswering) Gone();
    return;
  }
  if (state_ == State::kAnswering) Watch();
}

void Session::OnClientGone(uint64_t n, std::function<void()> fn) {
  if (n != exchange_ || state_ == State::kClosed) return fn();
  if (answering(n)) on_gone_ = std::move(fn);
}

void Session::After(uint64_t n, double seconds, std::function<void()> fn) {
  if (!answering(n)) return;
  auto timer = std::make_shared<net::steady_timer>(stream_.get_executor());
  timer->expires_after(Seconds(seconds));
  timer->async_wait([self = shared_from_this(), n, fn = std::move(fn), timer](beast::error_code ec) {
    if (!ec && self->answering(n)) fn();
  });
  timers_.push_back(std::move(timer));
}

void Session::ExchangeDone() {
  LogAccess();
  EndExchange();
  if (close_after_ || !keep_alive_ || owner_.draining()) return LingerClose();
  state_ = State::kIdle;
  if (watching_) {  // the read started while answering: cancel it, then read the next request
    resume_after_watch_ = true;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    return;
  }
  ReadIdle();
}

void Session::EndExchange() {
  on_gone_ = nullptr;
  for (auto& t : timers_) t->cancel();
  timers_.clear();
  keepalive_timer_.cancel();
  streaming_ = head_written_ = end_queued_ = false;
  if (!writing_) {  // a write in flight still reads these (Close during a write)
    out_.clear();
    out_bytes_ = 0;
  }
  if (in_exchange_) {
    in_exchange_ = false;
    owner_.ExchangeEnded();
  }
  // Released from the io queue: this may be the last reference, and `this` is running.
  if (hold_) net::post(stream_.get_executor(), [hold = std::move(hold_)] {});
}

void Session::Gone() {
  if (state_ == State::kClosed) return;
  std::function<void()> fn = std::move(on_gone_);
  if (in_exchange_ && status_ == 0) status_ = 499;  // nginx's "client closed request"
  if (in_exchange_) LogAccess();
  Close();
  if (fn) fn();
}

void Session::LingerClose() {
  if (state_ == State::kClosed || state_ == State::kLinger) return;
  state_ = State::kLinger;
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  linger_bytes_ = 0;
  if (!watching_) buffer_.consume(buffer_.size());  // else OnWatch drops it (the read writes there)
  keepalive_timer_.expires_after(Seconds(kLingerSeconds));
  keepalive_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (!ec) self->Close();
  });
  Watch();
}

void Session::Drain() {
  keep_alive_ = false;
  if (state_ == State::kIdle || state_ == State::kHeader || state_ == State::kBody) Close();
}

void Session::Close() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  EndExchange();
  beast::error_code ignored;
  stream_.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  stream_.close();
}

void Session::LogAccess() {
  if (!owner_.access_log()) return;
  spdlog::info("{}", AccessLogLine(head_.request_id, peer_, head_.method, head_.target, status_, bytes_sent_,
                                   NowSeconds() - started_));
}

}  // namespace slimkv::server
