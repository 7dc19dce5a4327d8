#include "kv/tiers/circuit_breaker.h"

#include <fmt/format.h>

#include <algorithm>

namespace slimkv::kv::tiers {

bool CircuitBreaker::Allow(double now) { return !open_ || now >= open_until_; }

void CircuitBreaker::Success() {
  open_ = false;
  failures_ = 0;
  backoff_s_ = options_.first_backoff_s;
}

void CircuitBreaker::Failure(double now) {
  ++failures_;
  // A failed half-open trial (the circuit was open) reopens at once, for
  // longer.
  if (open_) {
    backoff_s_ = std::min(backoff_s_ * 2, options_.max_backoff_s);
  } else if (failures_ < options_.failures_to_open) {
    return;
  }
  open_ = true;
  open_until_ = now + backoff_s_;
  ++opened_;
}

std::string CircuitBreaker::State(double now) const {
  if (!open_) return "closed";
  return now >= open_until_ ? "half-open" : fmt::format("open for {:.1f} s more", open_until_ - now);
}

}  // namespace slimkv::kv::tiers
