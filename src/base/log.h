// Logging (spdlog) and a terminal progress line for long work (model fetch, perplexity,
// benchmarks). Progress goes to stderr so stdout stays clean for results.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace slimkv {

// Seconds on a monotonic clock; the one clock of the program (tests inject their own
// where time matters).
double NowSeconds();

// On a terminal, one line rewritten in place at most every 0.2 s. Otherwise (a log file, a
// pipe, CI) plain lines: the first update, then every 10 % or 10 s, whichever comes first,
// so a redirected run still shows that it is moving.
class Progress {
 public:
  // `total` units of work named `unit` ("tokens", "chunks"). `force_tty` draws the terminal
  // line even when stderr is not a terminal.
  Progress(std::string label, int64_t total, std::string unit, bool force_tty = false);
  ~Progress();
  void Update(int64_t done, const std::string& extra = "");
  void Finish(const std::string& extra = "");

 private:
  std::string Line(int64_t done, double now, const std::string& extra) const;

  std::string label_, unit_;
  int64_t total_;
  double start_, last_print_ = 0;
  int last_decile_ = -1;
  bool tty_, finished_ = false;
};

}  // namespace slimkv
