// A circuit breaker for a remote store: after a failure the circuit opens and
// calls fail at once (no connect, no timeout) until a backoff has passed; then
// one call is let through (half-open). Its success closes the circuit; its
// failure reopens it for twice as long, up to a ceiling. So a store that is
// down or slow costs each caller at most one timeout per backoff period, and a
// store that comes back is used again within one period. Not thread-safe: its
// owner serializes calls (redis_tier.h holds a mutex).
#pragma once

#include <cstdint>
#include <string>

namespace slimkv::kv::tiers {

struct BreakerOptions {
  int failures_to_open = 1;      // consecutive failures that open a closed circuit
  double first_backoff_s = 0.5;  // the first open period
  double max_backoff_s = 30;     // the longest open period
};

class CircuitBreaker {
 public:
  explicit CircuitBreaker(const BreakerOptions &options = {})
      : options_(options), backoff_s_(options.first_backoff_s) {}

  // Whether a call may go to the store now (closed, or the half-open trial).
  bool Allow(double now);
  void Success();
  void Failure(double now);

  bool open() const { return open_; }
  // "closed", or "open for 1.5 s more" (for stats).
  std::string State(double now) const;
  int64_t opened() const { return opened_; }  // times the circuit opened

 private:
  BreakerOptions options_;
  bool open_ = false;
  int failures_ = 0;
  double open_until_ = 0;
  double backoff_s_;
  int64_t opened_ = 0;
};

}  // namespace slimkv::kv::tiers
