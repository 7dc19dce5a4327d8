// A redis-server of the test's own on a free loopback port (no persistence),
// which the test can kill, pause (SIGSTOP: a Redis that accepts connections and
// never answers) and restart. Debian's redis-server must be installed
// (tools/setup.sh test); without it the tests fail.
#pragma once

#include <sys/types.h>

#include <string>

namespace slimkv::kv::tiers::testing {

class RedisServer {
 public:
  RedisServer() = default;
  ~RedisServer();
  RedisServer(const RedisServer &) = delete;
  RedisServer &operator=(const RedisServer &) = delete;

  // Starts on `port` (0: a free one) and waits until it answers PING; "" or why
  // not.
  std::string Start(int port = 0);
  void Kill();    // SIGKILL, waits for it
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  // Runs a command against it with redis-cli; its stdout.
  std::string Cli(const std::string &args) const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

int FreeLoopbackPort();

}  // namespace slimkv::kv::tiers::testing
