// loadgen_hostile: a server under attack while it serves, loopback only, bounded in time.
//
//   loadgen_hostile --port 8080 --pid PID --slow 300 --clients 64 --requests-per-client 4
//   loadgen_hostile --port 8080 --pid PID --slow 0 --clients 0 --header-bomb 1000000
//
// At once, until the normal clients are done (or --max-seconds):
//   slow: --slow connections from --slow-from (other loopback addresses, as an attacker's
//     hosts would be) each send the start of a request header and then one more byte every
//     --slow-interval seconds (slow-loris); a connection the server closes is opened again a
//     second later;
//   clients: --clients closed-loop clients each send --requests-per-client streamed
//     completions of --max-tokens tokens (ignore_eos) and check each ended with [DONE];
//   health: GET /health on a new connection every --health-interval seconds;
//   rss: the server's resident memory (/proc/PID/status) every 0.2 s.
// --header-bomb N (after the rest): one request with N header fields, sent until the server
//   answers or closes; prints what it answered, the bytes it took and its memory after.
// Prints one table row: health p50/p99/max and failures, requests ok/lost, RSS at the start
// and at its peak, and what happened to the slow connections.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Options {
  int port = 8080;
  int pid = 0;
  int slow = 300;
  std::string slow_from = "127.0.0.2,127.0.0.3,127.0.0.4";
  double slow_interval = 10;
  int clients = 64;
  int requests_per_client = 4;
  int max_tokens = 32;
  double health_interval = 0.05;
  double max_seconds = 300;
  int64_t header_bomb = 0;
};

int64_t RssBytes(int pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return 0;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// A non-blocking TCP connection to 127.0.0.1:port from `from`; -1 on failure.
int Connect(int port, const std::string& from, bool blocking) {
  const int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  inet_pton(AF_INET, from.c_str(), &local.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    close(fd);
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

struct SlowStats {
  std::atomic<int> open{0}, peak_open{0};
  std::atomic<int64_t> opened{0}, closed_by_server{0};
};

// Keeps `o.slow` slow-loris connections open until `stop`: each sends the start of a
// request header, then one byte every slow_interval seconds, never ending the header.
void SlowLoris(const Options& o, const std::atomic<bool>& stop, SlowStats* st) {
  struct Conn {
    int fd = -1;
    bool started = false;
    double next_write = 0;
    double next_connect = 0;  // a second after the server closed it
  };
  std::vector<std::string> from;
  for (size_t start = 0; start <= o.slow_from.size();) {
    const size_t comma = std::min(o.slow_from.find(',', start), o.slow_from.size());
    from.push_back(o.slow_from.substr(start, comma - start));
    start = comma + 1;
  }
  std::vector<Conn> conns(o.slow);
  const auto t0 = Clock::now();
  static constexpr char kStart[] = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  while (!stop) {
    const double now = Since(t0);
    int open = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      if (c.fd < 0) {
        if (now < c.next_connect) continue;
        c.fd = Connect(o.port, from[i % from.size()], false);
        if (c.fd < 0) continue;
        ++st->opened;
        c.started = false;
        c.next_write = now + 0.1;
      }
      char buf[512];
      const ssize_t r = recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN)) {
        close(c.fd);  // the server answered or closed it: come back a second later
        c.fd = -1;
        c.next_connect = now + 1.0;
        ++st->closed_by_server;
        continue;
      }
      ++open;
      if (now < c.next_write) continue;
      const ssize_t w =
          c.started ? send(c.fd, "X", 1, MSG_NOSIGNAL) : send(c.fd, kStart, sizeof(kStart) - 1, MSG_NOSIGNAL);
      if (w > 0) {
        c.started = true;
        c.next_write = now + o.slow_interval;
      }
    }
    st->open = open;
    st->peak_open = std::max(st->peak_open.load(), open);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (Conn& c : conns)
    if (c.fd >= 0) close(c.fd);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"slimkv loadgen_hostile: serving under slow-loris and oversized headers (loopback only)"};
  app.add_option("--port", o.port, "the server's port on 127.0.0.1")->required();
  app.add_option("--pid", o.pid, "the server's process id (for its memory)")->required();
  app.add_option("--slow", o.slow, "slow-loris connections (default 300)");
  app.add_option(
      "--slow-from", o.slow_from,
      "loopback addresses they come from, comma-separated, used in turn (default "
      "127.0.0.2,127.0.0.3,127.0.0.4: three attacking hosts, none of them the clients' 127.0.0.1)");
  app.add_option("--slow-interval", o.slow_interval, "seconds between their bytes (default 10)");
  app.add_option("--clients", o.clients, "normal clients (default 64)");
  app.add_option("--requests-per-client", o.requests_per_client,
                 "streamed completions per client (default 4)");
  app.add_option("--max-tokens", o.max_tokens, "tokens per completion (default 32)");
  app.add_option("--health-interval", o.health_interval, "seconds between /health probes (default 0.05)");
  app.add_option("--max-seconds", o.max_seconds, "stop after this long (default 300)");
  app.add_option("--header-bomb", o.header_bomb,
                 "then one request with this many header fields (default 0: none)");
  CLI11_PARSE(app, argc, argv);
  if (o.slow_from.rfind("127.", 0) != 0) {
    std::fprintf(stderr, "error: --slow-from must be a loopback address\n");
    return 2;
  }

  const auto t0 = Clock::now();
  const int64_t rss_start = RssBytes(o.pid);
  std::atomic<int64_t> rss_peak{rss_start};
  std::atomic<bool> stop{false};
  SlowStats slow;
  std::thread slow_thread([&] { SlowLoris(o, stop, &slow); });
  std::thread rss_thread([&] {
    while (!stop) {
      rss_peak = std::max(rss_peak.load(), RssBytes(o.pid));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  std::mutex mu;
  std::vector<double> health;
  int health_failed = 0;
  std::thread health_thread([&] {
    while (!stop) {
      httplib::Client cli("127.0.0.1", o.port);
      cli.set_connection_timeout(5, 0);
      cli.set_read_timeout(5, 0);
      const auto start = Clock::now();
      auto res = cli.Get("/health");
      const double s = Since(start);
      {
        std::lock_guard<std::mutex> lock(mu);
        if (res && res->status == 200) {
          health.push_back(s);
        } else {
          ++health_failed;
        }
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(o.health_interval));
    }
  });
  // Let the slow connections settle in before the clients start.
  std::this_thread::sleep_for(std::chrono::seconds(o.slow > 0 ? 2 : 0));
  std::atomic<int> ok{0}, lost{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", o.port);
      cli.set_connection_timeout(10, 0);
      cli.set_read_timeout(120, 0);
      for (int r = 0; r < o.requests_per_client && Since(t0) < o.max_seconds; ++r) {
        const std::string body = fmt::format(
            R"({{"prompt": "Client {} request {}: tell a story about the sea", "max_tokens": {}, "ignore_eos": true, "stream": true}})",
            c, r, o.max_tokens);
        std::string got;
        auto res = cli.Post("/v1/completions", httplib::Headers{}, body, "application/json");
        if (res && res->status == 200 && res->body.find("data: [DONE]") != std::string::npos) {
          ++ok;
        } else {
          ++lost;
          std::fprintf(
              stderr, "request lost: %s\n",
              res ? fmt::format("HTTP {}", res->status).c_str() : httplib::to_string(res.error()).c_str());
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const double wall = Since(t0);
  stop = true;
  slow_thread.join();
  health_thread.join();
  rss_thread.join();

  std::printf(
      "| slow conns | clients | requests ok | lost | /health p50 ms | p99 ms | max ms | failed probes | "
      "RSS start MiB | RSS peak MiB | slow peak open | slow closed by server | wall s |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %d | %d | %d | %d | %.1f | %.1f | %.1f | %d | %.0f | %.0f | %d | %lld | %.0f |\n", o.slow,
              o.clients, ok.load(), lost.load(), Quantile(health, 0.5) * 1e3, Quantile(health, 0.99) * 1e3,
              health.empty() ? 0.0 : *std::max_element(health.begin(), health.end()) * 1e3, health_failed,
              rss_start / 1048576.0, rss_peak / 1048576.0, slow.peak_open.load(),
              static_cast<long long>(slow.closed_by_server.load()), wall);

  if (o.header_bomb > 0) {
    const int64_t before = RssBytes(o.pid);
    const int fd = Connect(o.port, "127.0.0.1", true);
    const std::string start = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    send(fd, start.data(), start.size(), MSG_NOSIGNAL);
    std::string batch;
    for (int i = 0; i < 1000; ++i) batch += fmt::format("X-Header-{}: value\r\n", i % 1000);
    int64_t sent_fields = 0, sent_bytes = 0;
    std::string answer;
    const auto b0 = Clock::now();
    int64_t peak = before;
    bool closed = false;
    while (sent_fields < o.header_bomb && Since(b0) < 120) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 0) > 0) break;  // the server answered (or closed)
      const ssize_t w = send(fd, batch.data(), batch.size(), MSG_NOSIGNAL);
      if (w <= 0) {
        closed = true;
        break;
      }
      sent_bytes += w;
      sent_fields += 1000;
      if (sent_fields % 100000 == 0) peak = std::max(peak, RssBytes(o.pid));
    }
    if (sent_fields >= o.header_bomb) send(fd, "\r\n", 2, MSG_NOSIGNAL);
    char buf[4096];
    timeval tv{30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    const ssize_t r = recv(fd, buf, sizeof(buf), 0);
    if (r > 0) answer.assign(buf, static_cast<size_t>(std::min<ssize_t>(r, 40)));
    answer = answer.substr(0, answer.find('\r'));
    close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    peak = std::max(peak, RssBytes(o.pid));
    std::printf(
        "\nheader bomb: %lld fields (%.1f MiB) sent in %.1f s; server answered '%s'%s; RSS %.0f -> peak %.0f "
        "-> "
        "after %.0f MiB\n",
        static_cast<long long>(sent_fields), sent_bytes / 1048576.0, Since(b0),
        answer.empty() ? "nothing" : answer.c_str(), closed ? " (closed while sending)" : "",
        before / 1048576.0, peak / 1048576.0, RssBytes(o.pid) / 1048576.0);
  }
  return 0;
}
