#include "kv/policies/merge.h"

#include <algorithm>
#include <cmath>

namespace slimkv::kv {

std::vector<int> MergeEvicted(int hd, std::span<const float> keys, std::span<float> values,
                              std::span<float> mass, std::span<const uint8_t> keep,
                              std::span<const uint8_t> receives) {
  const int n = static_cast<int>(mass.size());
  std::vector<double> norm(n);
  for (int t = 0; t < n; ++t) {
    double x = 0;
    for (int d = 0; d < hd; ++d) x += static_cast<double>(keys[t * hd + d]) * keys[t * hd + d];
    norm[t] = std::sqrt(x) + 1e-12;
  }
  std::vector<uint8_t> changed(n, 0);
  for (int e = 0; e < n; ++e) {
    if (keep[e]) continue;
    int best = -1;
    double best_cos = -2;
    for (int r = 0; r < n; ++r) {
      if (!keep[r] || !receives[r]) continue;
      double dot = 0;
      for (int d = 0; d < hd; ++d) dot += static_cast<double>(keys[e * hd + d]) * keys[r * hd + d];
      const double c = dot / (norm[e] * norm[r]);
      if (c > best_cos) best_cos = c, best = r;
    }
    if (best < 0) continue;
    const double we = std::max(mass[e], 1e-6f), wr = std::max(mass[best], 1e-6f);
    for (int d = 0; d < hd; ++d) {
      values[best * hd + d] =
          static_cast<float>((wr * values[best * hd + d] + we * values[e * hd + d]) / (wr + we));
    }
    mass[best] += mass[e];
    changed[best] = 1;
  }
  std::vector<int> out;
  for (int t = 0; t < n; ++t)
    if (changed[t]) out.push_back(t);
  return out;
}

}  // namespace slimkv::kv
