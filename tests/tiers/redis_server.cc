#include "redis_server.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace slimkv::kv::tiers::testing {

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

RedisServer::~RedisServer() { Kill(); }

std::string RedisServer::Start(int port) {
  port_ = port ? port : FreeLoopbackPort();
  const std::string p = std::to_string(port_);
  std::vector<std::string> args = {
      "redis-server", "--port",     p,         "--bind", "127.0.0.1", "--save", "", "--appendonly",
      "no",           "--loglevel", "warning", "--dir",  "/tmp"};
  pid_ = ::fork();
  if (pid_ < 0) return "fork failed";
  if (pid_ == 0) {
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp("redis-server", argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 500; ++i) {  // up to 10 s on a loaded machine
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) && WEXITSTATUS(status) == 127
                 ? "redis-server is not installed (tools/setup.sh test "
                   "installs it)"
                 : "redis-server exited at start";
    }
    timeval tv{0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (c && !c->err) {
      auto *r = static_cast<redisReply *>(redisCommand(c, "PING"));
      const bool ok = r && r->type == REDIS_REPLY_STATUS;
      if (r) freeReplyObject(r);
      redisFree(c);
      if (ok) return "";
    } else if (c) {
      redisFree(c);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return "redis-server did not answer within 10 s";
}

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::Pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::Resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

std::string RedisServer::Cli(const std::string &args) const {
  std::string out;
  FILE *f = ::popen(fmt::format("redis-cli -p {} {}", port_, args).c_str(), "r");
  if (!f) return out;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  ::pclose(f);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace slimkv::kv::tiers::testing
