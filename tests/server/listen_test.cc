// The listening socket: a burst of clients connecting before the server accepts any of them
// is queued by the kernel, not dropped (cpp-httplib's compiled-in backlog of 5 was), and a
// port in use is an error, not a second server sharing it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "engine/engine.h"
#include "engine/scheduler.h"
#include "kv/format.h"
#include "server/server.h"
#include "test_util.h"

namespace slimkv::server {
namespace {

std::unique_ptr<engine::Engine> MakeEngine(const std::string& path) {
  engine::EngineOptions o;
  o.model_path = path;
  o.kv = *kv::ParsePreset("fp16");
  o.n_ctx = 128;
  o.n_seq = 2;
  auto e = engine::Engine::Create(o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

// Starts a non-blocking connect to 127.0.0.1:port; -1 on failure to start.
int ConnectNonBlocking(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
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

TEST(ListenTest, ABurstOfConnectionsIsQueuedBeforeAnyIsAccepted) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_NE(e, nullptr);
  auto sched = engine::Scheduler::Create(e.get(), engine::SchedulerOptions{});
  ASSERT_TRUE(sched.ok()) << sched.status().ToString();
  ServerOptions so;
  so.port = 0;
  HttpServer server(*e, **sched, so);
  ASSERT_TRUE(server.Bind().ok());
  // Nobody accepts (Serve is never called): every handshake the kernel completes waits in
  // the accept queue. With a backlog of 5 only about 6 of these complete; the rest stay in
  // SYN-SENT while the kernel drops their SYNs.
  constexpr int kClients = 64;
  std::vector<pollfd> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = ConnectNonBlocking(server.port());
    ASSERT_GE(fd, 0) << "connect " << i;
    fds.push_back({fd, POLLOUT, 0});
  }
  int connected = 0;
  for (int round = 0; round < 20 && connected < kClients; ++round) {
    poll(fds.data(), fds.size(), 100);
    connected = 0;
    for (const pollfd& p : fds) {
      int err = 0;
      socklen_t len = sizeof(err);
      if ((p.revents & POLLOUT) && getsockopt(p.fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) ++connected;
    }
  }
  for (const pollfd& p : fds) close(p.fd);
  EXPECT_EQ(connected, kClients) << "connections completed by the kernel before any accept";
}

TEST(ListenTest, APortInUseIsAnError) {
  SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
  auto e = MakeEngine(path);
  ASSERT_NE(e, nullptr);
  auto sched = engine::Scheduler::Create(e.get(), engine::SchedulerOptions{});
  ASSERT_TRUE(sched.ok()) << sched.status().ToString();
  ServerOptions so;
  so.port = 0;
  HttpServer first(*e, **sched, so);
  ASSERT_TRUE(first.Bind().ok());
  so.port = first.port();
  HttpServer second(*e, **sched, so);
  const Status st = second.Bind();
  ASSERT_FALSE(st.ok()) << "a second server bound port " << so.port;
  EXPECT_NE(st.ToString().find(std::to_string(so.port)), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace slimkv::server
