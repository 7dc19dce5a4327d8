#include "base/log.h"

#include <unistd.h>

#include <cstdio>

namespace slimkv {

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

Progress::Progress(std::string label, int64_t total, std::string unit, bool force_tty)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      start_(NowSeconds()),
      tty_(force_tty || ::isatty(STDERR_FILENO)) {}

Progress::~Progress() {
  if (tty_ && !finished_ && last_print_ > 0) std::fputc('\n', stderr);
}

std::string Progress::Line(int64_t done, double now, const std::string& extra) const {
  const double elapsed = now - start_;
  const double rate = elapsed > 0 ? done / elapsed : 0;
  const double pct = total_ > 0 ? 100.0 * done / total_ : 0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  return fmt::format("{}: {}/{} {} ({:.0f}%) {:.1f} {}/s eta {:.0f}s{}{}", label_, done, total_, unit_, pct,
                     rate, unit_, eta, extra.empty() ? "" : " ", extra);
}

void Progress::Update(int64_t done, const std::string& extra) {
  const double now = NowSeconds();
  if (tty_) {
    if (now - last_print_ < 0.2 && done < total_) return;
    last_print_ = now;
    std::fprintf(stderr, "\r%s\033[K", Line(done, now, extra).c_str());
    std::fflush(stderr);
    return;
  }
  const int decile = total_ > 0 ? static_cast<int>(10 * done / total_) : 0;
  if (last_print_ > 0 && decile == last_decile_ && now - last_print_ < 10) return;
  last_print_ = now;
  last_decile_ = decile;
  std::fprintf(stderr, "%s\n", Line(done, now, extra).c_str());
  std::fflush(stderr);
}

void Progress::Finish(const std::string& extra) {
  if (finished_) return;
  finished_ = true;
  std::fprintf(stderr, "%s%s: done in %.1fs%s%s%s\n", tty_ ? "\r" : "", label_.c_str(), NowSeconds() - start_,
               extra.empty() ? "" : " ", extra.c_str(), tty_ ? "\033[K" : "");
}

}  // namespace slimkv
