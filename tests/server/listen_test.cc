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

#include "engine/engine_test_util.h"
#include "engine/scheduler.h"
#include "server/server.h"
#include "test_util.h"

namespace slimkv::server {
namespace {

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

// A small engine and an idle scheduler for servers that are bound but never serve.
class ListenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SLIMKV_REQUIRE_MODEL(path, testing::DefaultModelFile());
    engine_ = testing::MakeTestEngine(path, {.kv = "fp16", .n_ctx = 128, .n_seq = 2});
    ASSERT_NE(engine_, nullptr);
    auto sched = engine::Scheduler::Create(engine_.get(), engine::SchedulerOptions{});
    ASSERT_TRUE(sched.ok()) << sched.status().ToString();
    scheduler_ = std::move(sched).value();
  }
  // A server on `port` (0: any free one); Bind() not yet called.
  std::unique_ptr<HttpServer> Server(int port) {
    ServerOptions so;
    so.port = port;
    return std::make_unique<HttpServer>(*engine_, *scheduler_, so);
  }
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<engine::Scheduler> scheduler_;
};

TEST_F(ListenTest, ABurstOfConnectionsIsQueuedBeforeAnyIsAccepted) {
  auto server_ptr = Server(0);
  HttpServer& server = *server_ptr;
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

TEST_F(ListenTest, APortInUseIsAnError) {
  auto first = Server(0);
  ASSERT_TRUE(first->Bind().ok());
  const int port = first->port();
  const Status st = Server(port)->Bind();
  ASSERT_FALSE(st.ok()) << "a second server bound port " << port;
  EXPECT_NE(st.ToString().find(std::to_string(port)), std::string::npos) << st.ToString();
}

}  // namespace
}  // namespace slimkv::server
