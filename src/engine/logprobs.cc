#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace slimkv::engine {

TokenLogprob ComputeLogprob(std::span<const float> logits, TokenId token, int top_k) {
  const int n = static_cast<int>(logits.size());
  // log Z in double with the maximum taken out, so large logits neither
  // overflow nor lose bits.
  const float max = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l) - max);
  const double log_z = max + std::log(z);
  TokenLogprob r;
  r.token = token;
  r.logprob = static_cast<float>(logits[token] - log_z);
  r.rank = 1;
  for (int i = 0; i < n; ++i) r.rank += logits[i] > logits[token];
  top_k = std::clamp(top_k, 0, n);
  if (top_k > 0) {
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    // Ties keep the lower token id first, so the order is the same on every
    // run.
    std::partial_sort(idx.begin(), idx.begin() + top_k, idx.end(), [&](int a, int b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < top_k; ++i) r.top.push_back({idx[i], static_cast<float>(logits[idx[i]] - log_z)});
  }
  return r;
}

}  // namespace slimkv::engine
