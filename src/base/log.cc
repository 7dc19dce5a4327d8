#include "base/log.h"

#include <unistd.h>

#include <cstdio>

namespace slimkv {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total, std::string unit, bool force)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), start_(NowSeconds()),
      enabled_(force || ::isatty(STDERR_FILENO)) {}

Progress::~Progress() {
  if (enabled_ && !finished_ && last_print_ > 0) std::fputc('\n', stderr);
}

void Progress::Update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  const double now = NowSeconds();
  if (now - last_print_ < 0.2 && done < total_) return;
  last_print_ = now;
  const double elapsed = now - start_;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double pct = total_ > 0 ? 100.0 * done / total_ : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  std::fprintf(stderr, "\r%s: %lld/%lld %s (%.0f%%) %.1f %s/s eta %.0fs %s\033[K", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), unit_.c_str(), pct,
               rate, unit_.c_str(), eta, extra.c_str());
  std::fflush(stderr);
}

void Progress::Finish(const std::string& extra) {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\r%s: done in %.1fs %s\033[K\n", label_.c_str(), NowSeconds() - start_,
               extra.c_str());
}

}  // namespace slimkv
