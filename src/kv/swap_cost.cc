#include "kv/swap_cost.h"

namespace slimkv::kv {

void SwapCost::ObserveFetch(int64_t bytes, double seconds) {
  if (seconds <= 0 || bytes <= 0) return;
  fetch_bytes_ = fetch_bytes_ * kDecay + static_cast<double>(bytes);
  fetch_s_ = fetch_s_ * kDecay + seconds;
  fetch_records_ = fetch_records_ * kDecay + 1;
}

void SwapCost::ObservePrefill(int64_t tokens, double seconds) {
  if (seconds <= 0 || tokens <= 0) return;
  prefill_tokens_ = prefill_tokens_ * kDecay + static_cast<double>(tokens);
  prefill_s_ = prefill_s_ * kDecay + seconds;
}

bool SwapCost::FetchPays(int64_t blocks, int64_t bytes_per_block, int tokens_per_block) {
  bool fetch = WouldFetch(blocks, bytes_per_block, tokens_per_block);
  if (!fetch && recompute_run_ >= kProbeAfter) {
    fetch = true;
    ++probes_;
  }
  recompute_run_ = fetch ? 0 : recompute_run_ + 1;
  ++(fetch ? fetch_chosen_ : recompute_chosen_);
  return fetch;
}

bool SwapCost::WouldFetch(int64_t blocks, int64_t bytes_per_block, int tokens_per_block) const {
  const double fetch_rate = fetch_bytes_per_s(), prefill_rate = prefill_tokens_per_s();
  bool fetch = true;
  if (fetch_rate > 0 && prefill_rate > 0 && blocks > 0) {
    const double fetch_s = static_cast<double>(blocks) * static_cast<double>(bytes_per_block) / fetch_rate;
    const double recompute_s = static_cast<double>(blocks) * tokens_per_block / prefill_rate;
    fetch = fetch_s <= recompute_s;
  }
  return fetch;
}

SwapCostStats SwapCost::stats() const {
  return {.fetch_chosen = fetch_chosen_,
          .recompute_chosen = recompute_chosen_,
          .probes = probes_,
          .fetch_bytes_per_s = fetch_bytes_per_s(),
          .prefill_tokens_per_s = prefill_tokens_per_s()};
}

}  // namespace slimkv::kv
