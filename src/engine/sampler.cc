#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

namespace slimkv::engine {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature)) return InvalidArgument("--temp must be >= 0, got {}", temperature);
  if (!(top_p > 0 && top_p <= 1)) return InvalidArgument("--top-p must be in (0, 1], got {}", top_p);
  if (!(min_p >= 0 && min_p < 1)) return InvalidArgument("--min-p must be in [0, 1), got {}", min_p);
  if (!(repeat_penalty > 0) || !std::isfinite(repeat_penalty)) {
    return InvalidArgument("--repeat-penalty must be > 0, got {}", repeat_penalty);
  }
  if (repeat_last_n < 0) return InvalidArgument("--repeat-last-n must be >= 0, got {}", repeat_last_n);
  if (!(frequency_penalty >= -2 && frequency_penalty <= 2)) {
    return InvalidArgument("frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  }
  if (!(presence_penalty >= -2 && presence_penalty <= 2)) {
    return InvalidArgument("presence_penalty must be in [-2, 2], got {}", presence_penalty);
  }
  return Status::Ok();
}

TokenId Argmax(std::span<const float> logits) {
  return static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TokenId Sampler::Sample(std::span<const float> logits, std::span<const TokenId> history) {
  const int n = static_cast<int>(logits.size());
  cand_.resize(n);
  for (int i = 0; i < n; ++i) cand_[i] = {logits[i], i};
  // Repetition penalty on the last repeat_last_n distinct tokens (llama.cpp's rule: divide
  // positive logits, multiply negative ones).
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n > 0) {
    std::unordered_set<TokenId> seen;
    const size_t from = history.size() > static_cast<size_t>(p_.repeat_last_n) ? history.size() - p_.repeat_last_n : 0;
    for (size_t i = from; i < history.size(); ++i) {
      const TokenId t = history[i];
      if (t < 0 || t >= n || !seen.insert(t).second) continue;
      float& l = cand_[t].first;
      l = l > 0 ? l / p_.repeat_penalty : l * p_.repeat_penalty;
    }
  }
  if ((p_.frequency_penalty != 0 || p_.presence_penalty != 0) && history.size() > prompt_tokens_) {
    std::unordered_map<TokenId, int> count;
    for (size_t i = prompt_tokens_; i < history.size(); ++i)
      if (history[i] >= 0 && history[i] < n) ++count[history[i]];
    for (const auto& [t, c] : count) cand_[t].first -= p_.frequency_penalty * c + p_.presence_penalty;
  }
  if (p_.temperature <= 0) {
    return std::max_element(cand_.begin(), cand_.end(), [](auto& a, auto& b) { return a.first < b.first; })->second;
  }
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = p_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(keep);
  // Probabilities at temperature 1 for the top-p and min-p filters.
  const float max_logit = cand_[0].first;
  std::vector<double> prob(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (prob[i] = std::exp(static_cast<double>(cand_[i].first - max_logit)));
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t k = 0;
    while (k < keep) {
      cum += prob[k] / sum;
      ++k;
      if (cum >= p_.top_p) break;
    }
    keep = std::max<size_t>(1, k);
  }
  if (p_.min_p > 0) {
    const double floor = p_.min_p * prob[0];  // prob[0] is the largest
    size_t k = 0;
    while (k < keep && prob[k] >= floor) ++k;
    keep = std::max<size_t>(1, k);
  }
  // Temperature, then draw.
  std::vector<double> w(keep);
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    total += (w[i] = std::exp(static_cast<double>(cand_[i].first - max_logit) / p_.temperature));
  }
  std::uniform_real_distribution<double> u(0.0, total);
  double x = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    if ((x -= w[i]) <= 0) return cand_[i].second;
  }
  return cand_[keep - 1].second;
}

}  // namespace slimkv::engine
