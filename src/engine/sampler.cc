#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

namespace slimkv::engine {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Most likely first; equal logits in id order, so the order is the same on every run.
bool ByLogit(const std::pair<float, TokenId>& a, const std::pair<float, TokenId>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature))
    return InvalidArgument("--temp must be >= 0, got {}", temperature);
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

void Sampler::TakeListed(const TokenLister& list_allowed) {
  listed_.clear();
  list_allowed(&listed_);
  cand_.clear();
  for (TokenId t : listed_) {
    if (t >= 0 && static_cast<size_t>(t) < score_.size() && score_[t] > -kInf)
      cand_.push_back({score_[t], t});
  }
  std::sort(cand_.begin(), cand_.end(), ByLogit);
}

bool Sampler::KeepAllowed(const TokenFilter& allowed, const TokenLister& list_allowed) {
  const size_t n = cand_.size();
  const size_t want = p_.top_k > 0 ? static_cast<size_t>(p_.top_k) : n;
  if (list_allowed) {
    // The most likely few first; if they hold `want` allowed tokens, that is the answer.
    const size_t few = std::min(n, std::max<size_t>(64, 2 * want));
    if (want < n) {
      std::partial_sort(cand_.begin(), cand_.begin() + few, cand_.end(), ByLogit);
      size_t out = 0;
      for (size_t i = 0; i < few && out < want; ++i) {
        if (cand_[i].first > -kInf && allowed(cand_[i].second)) cand_[out++] = cand_[i];
      }
      if (out == want) {
        cand_.resize(out);
        return true;
      }
    }
    TakeListed(list_allowed);
    if (cand_.size() > want) cand_.resize(want);
    return !cand_.empty();
  }
  // Sort a growing prefix, most likely first, until it holds `want` allowed tokens (or is
  // everything); disallowed tokens are dropped as they are found.
  size_t sorted = want < n ? std::min(n, std::max<size_t>(64, 2 * want)) : n;
  for (;;) {
    if (sorted < n) {
      std::partial_sort(cand_.begin(), cand_.begin() + sorted, cand_.end(), ByLogit);
    } else {
      std::sort(cand_.begin(), cand_.end(), ByLogit);
    }
    size_t found = 0;
    for (size_t i = 0; i < sorted && found < want; ++i)
      found += cand_[i].first > -kInf && allowed(cand_[i].second);
    if (found >= want || sorted == n) break;
    sorted = std::min(n, 4 * sorted);
  }
  // Keep the first `want` allowed ones, in order. (The filter is asked again for those kept:
  // cheaper than remembering, and it is a pure function of the token.)
  size_t out = 0;
  for (size_t i = 0; i < sorted && out < want; ++i) {
    if (cand_[i].first > -kInf && allowed(cand_[i].second)) cand_[out++] = cand_[i];
  }
  cand_.resize(out);
  return out > 0;
}

TokenId Sampler::Sample(std::span<const float> logits, std::span<const TokenId> history,
                        const TokenFilter& allowed, const TokenLister& list_allowed) {
  const int n = static_cast<int>(logits.size());
  cand_.resize(n);
  for (int i = 0; i < n; ++i) cand_[i] = {logits[i], i};
  // Repetition penalty on the last repeat_last_n distinct tokens (llama.cpp's rule: divide
  // positive logits, multiply negative ones).
  if (p_.repeat_penalty != 1.0f && p_.repeat_last_n > 0) {
    std::unordered_set<TokenId> seen;
    const size_t from =
        history.size() > static_cast<size_t>(p_.repeat_last_n) ? history.size() - p_.repeat_last_n : 0;
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
  if (allowed && list_allowed) {
    score_.resize(n);
    for (int i = 0; i < n; ++i) score_[i] = cand_[i].first;
  }
  auto by_value = [](const auto& a, const auto& b) { return a.first < b.first; };
  if (p_.temperature <= 0) {
    if (!allowed) return std::max_element(cand_.begin(), cand_.end(), by_value)->second;
    // The most likely allowed token: the first maximum in id order, as with masked logits.
    // A few tries usually find it; then one pass over the whole vocabulary.
    constexpr int kTries = 16;
    for (int i = 0; i < kTries; ++i) {
      auto it = std::max_element(cand_.begin(), cand_.end(), by_value);
      if (it->first == -kInf) return kNoToken;
      if (allowed(it->second)) return it->second;
      it->first = -kInf;
    }
    if (list_allowed) {
      TakeListed(list_allowed);  // most likely first; equal ones in id order
      return cand_.empty() ? kNoToken : cand_[0].second;
    }
    std::erase_if(cand_, [&](const auto& c) { return c.first == -kInf || !allowed(c.second); });
    if (cand_.empty()) return kNoToken;
    return std::max_element(cand_.begin(), cand_.end(), by_value)->second;
  }
  if (allowed) {
    if (!KeepAllowed(allowed, list_allowed)) return kNoToken;
  } else {
    size_t keep = cand_.size();
    if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
      keep = p_.top_k;
      std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), ByLogit);
    } else {
      std::sort(cand_.begin(), cand_.end(), ByLogit);
    }
    cand_.resize(keep);
  }
  size_t keep = cand_.size();
  // Probabilities at temperature 1 for the top-p and min-p filters.
  const float max_logit = cand_[0].first;
  std::vector<double> prob(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i)
    sum += (prob[i] = std::exp(static_cast<double>(cand_[i].first - max_logit)));
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
