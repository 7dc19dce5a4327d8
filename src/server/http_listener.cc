#include "server/http_listener.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <random>
#include <vector>

#include "server/api_error.h"
#include "server/http_session.h"

namespace slimkv::server {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The whole answer to a connection over the caps, written without waiting: 503, close.
const std::string& BusyResponse() {
  static const std::string kResponse = [] {
    ApiError e{503, "too many connections; try again later", "server_error", "", "too_many_connections"};
    const std::string body = e.ToJson();
    return fmt::format(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Retry-After: 1\r\nConnection: close\r\n\r\n{}",
        body.size(), body);
  }();
  return kResponse;
}

}  // namespace

void IoGate::Post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  if (ioc_ != nullptr) net::post(*ioc_, std::move(fn));
}

void IoGate::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  ioc_ = nullptr;
}

struct HttpListener::Impl {
  explicit Impl(net::io_context& c) : ioc(c), acceptor(c), retry(c) {}
  net::io_context& ioc;
  tcp::acceptor acceptor;
  net::steady_timer retry;  // after an accept error (out of descriptors), try again a little later
};

HttpListener::HttpListener(net::io_context& ioc, HttpHandler& handler, HttpLimits limits,
                           std::shared_ptr<IoGate> gate, bool access_log)
    : impl_(std::make_unique<Impl>(ioc)),
      handler_(handler),
      limits_(limits),
      gate_(std::move(gate)),
      access_log_(access_log),
      request_id_base_(std::random_device{}()) {}

HttpListener::~HttpListener() = default;

Status HttpListener::Bind(const std::string& host, int port, int backlog) {
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  const net::ip::address address = net::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, static_cast<uint16_t>(port));
  } else {
    tcp::resolver resolver(impl_->ioc);
    auto found = resolver.resolve(host, std::to_string(port), tcp::resolver::passive, ec);
    if (ec || found.empty())
      return IoError("cannot listen on {}:{} (no such address: {})", host, port, ec.message());
    endpoint = found.begin()->endpoint();
  }
  tcp::acceptor& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  // SO_REUSEADDR only (a restarted server binds at once); never SO_REUSEPORT, which would
  // let a second server share a port in use instead of failing.
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (ec) {
    a.close();
    return IoError("cannot listen on {}:{} ({}: address in use, or not an address of this machine)", host,
                   port, ec.message());
  }
  a.listen(backlog, ec);
  if (ec)
    return IoError("cannot listen on {}:{} with a backlog of {} ({})", host, port, backlog, ec.message());
  port_ = a.local_endpoint().port();
  return Status::Ok();
}

void HttpListener::Start() { Accept(); }

void HttpListener::Accept() {
  impl_->acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (closed_) return;
    if (ec) {
      if (ec == net::error::operation_aborted) return;
      impl_->retry.expires_after(std::chrono::milliseconds(100));
      impl_->retry.async_wait([this](boost::system::error_code e) {
        if (!e && !closed_) Accept();
      });
      return;
    }
    ++counters_.accepted;
    boost::system::error_code ignored;
    const tcp::endpoint remote = socket.remote_endpoint(ignored);
    const std::string peer = remote.address().to_string();
    int& from_peer = per_peer_[peer];
    if (static_cast<int>(sessions_.size()) >= limits_.max_connections ||
        from_peer >= limits_.max_connections_per_peer) {
      if (from_peer == 0) per_peer_.erase(peer);
      ++counters_.refused;
      socket.non_blocking(true, ignored);
      // Read what the client has already sent, so that closing does not reset the connection
      // before it can read the answer (a socket closed with unread bytes sends RST).
      char drop[4096];
      for (int i = 0; i < 16 && socket.read_some(net::buffer(drop), ignored) > 0; ++i) {
      }
      socket.write_some(net::buffer(BusyResponse()), ignored);
      socket.shutdown(tcp::socket::shutdown_both, ignored);
      socket.close(ignored);
    } else {
      ++from_peer;
      socket.set_option(tcp::no_delay(true), ignored);  // stream tokens as they come
      auto session = std::make_shared<Session>(std::move(socket), *this, peer);
      sessions_.insert(session.get());
      counters_.open = static_cast<int64_t>(sessions_.size());
      session->Start();  // while draining, it answers one request and closes
    }
    Accept();
  });
}

void HttpListener::Forget(Session* s, const std::string& peer) {
  sessions_.erase(s);
  counters_.open = static_cast<int64_t>(sessions_.size());
  auto it = per_peer_.find(peer);
  if (it != per_peer_.end() && --it->second <= 0) per_peer_.erase(it);
}

void HttpListener::Drain() {
  draining_ = true;
  const std::vector<Session*> all(sessions_.begin(), sessions_.end());
  for (Session* s : all) s->Drain();
}

void HttpListener::CloseAll() {
  closed_ = true;
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
  impl_->retry.cancel();
  const std::vector<Session*> all(sessions_.begin(), sessions_.end());
  for (Session* s : all) s->Close();
}

void HttpListener::ExchangeEnded() {
  --in_flight_;
  if (on_idle_) net::post(impl_->ioc, on_idle_);
}

std::string HttpListener::NextRequestId() {
  return fmt::format("req-{:016x}", SplitMix64(request_id_base_ + next_request_++));
}

}  // namespace slimkv::server
