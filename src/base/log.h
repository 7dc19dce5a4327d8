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

class Progress {
 public:
  // `total` units of work named `unit` ("tokens", "chunks"); prints at most every 0.2 s and
  // only when stderr is a terminal, unless `force` is set.
  Progress(std::string label, int64_t total, std::string unit, bool force = false);
  ~Progress();
  void Update(int64_t done, const std::string& extra = "");
  void Finish(const std::string& extra = "");

 private:
  std::string label_, unit_;
  int64_t total_;
  double start_, last_print_ = 0;
  bool enabled_, finished_ = false;
};

}  // namespace slimkv
